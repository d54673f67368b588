import time

import numpy as np
import pytest

from livedenoise.errors import UserError
from livedenoise.sim.metrics import roi_traces
from livedenoise.io.readers import open_movie
from livedenoise.sim.imaging import (CLEAN_STEP, SimConfig, TruthFrames, load_truth, save_simulation, simulate_movie,
                                     truth_path)

SMALL = dict(frames=300, height=48, width=56)


def test_same_seed_same_movie_other_seed_other_movie():
    a = simulate_movie(SimConfig(seed=3, **SMALL))
    b = simulate_movie(SimConfig(seed=3, **SMALL))
    c = simulate_movie(SimConfig(seed=4, **SMALL))
    np.testing.assert_array_equal(a.noisy, b.noisy)
    np.testing.assert_array_equal(a.clean, b.clean)
    np.testing.assert_array_equal(a.masks, b.masks)
    assert not np.array_equal(a.noisy, c.noisy)
    assert not np.array_equal(a.masks, c.masks)


def test_shapes_and_types():
    sim = simulate_movie(SimConfig(n_neurons=5, **SMALL))
    t, h, w = 300, 48, 56
    assert sim.noisy.shape == (t, h, w) and sim.noisy.dtype == np.int16
    assert sim.clean.shape == (t, h, w) and sim.clean.dtype == np.float32
    n = sim.masks.shape[0]
    assert 1 <= n <= 5 and sim.masks.shape == (n, h, w) and sim.masks.dtype == bool
    assert sim.masks.sum(axis=(1, 2)).min() >= 10
    assert sim.traces.shape == (n, t) and sim.traces.dtype == np.float32
    assert len(sim.spikes) == n
    for s in sim.spikes:
        assert s.dtype == np.int64 and np.all(np.diff(s) > 0) and (s.size == 0 or (s[0] >= 0 and s[-1] < t))


@pytest.mark.parametrize("photons", [0.5, 1.0, 4.0])
def test_photon_level_is_the_requested_one(photons):
    cfg = SimConfig(photons=photons, seed=1, **SMALL)
    sim = simulate_movie(cfg)
    measured = (sim.noisy.mean(dtype=np.float64) - cfg.offset) / cfg.gain
    assert measured == pytest.approx(photons, rel=0.1)


def test_clean_is_the_expected_value_and_noise_is_poisson_gaussian():
    cfg = SimConfig(photons=2.0, seed=2, frames=400, height=48, width=48)
    sim = simulate_movie(cfg)
    resid = sim.noisy.astype(np.float64) - sim.clean
    assert abs(resid.mean()) < 0.02 * cfg.gain  # unbiased
    expected_photons = (sim.clean.astype(np.float64) - cfg.offset) / cfg.gain
    # shot noise variance = gain^2 * photons, plus read noise and rounding
    predicted = cfg.gain**2 * expected_photons.mean() + cfg.read_noise**2 + 1 / 12
    assert resid.var() == pytest.approx(predicted, rel=0.05)


def test_low_photon_movie_is_very_noisy_but_transients_are_in_the_truth():
    cfg = SimConfig(photons=1.0, seed=0, frames=600, height=64, width=64)
    sim = simulate_movie(cfg)
    # a single raw pixel has SNR of about 1 at 1 photon
    raw = sim.noisy.astype(float) - cfg.offset
    snr = raw.mean() / raw.std(axis=0).mean()
    assert 0.5 < snr < 1.5
    # the clean ROI traces rise at event onsets, by a sizeable fraction of the resting level
    tr = roi_traces(sim.clean, sim.masks)
    rises = []
    for i, onsets in enumerate(sim.spikes):
        k = onsets[(onsets >= 1)]
        if k.size:
            rest = np.median(tr[i]) - cfg.offset
            rises.append(np.median(tr[i, k] - tr[i, k - 1]) / rest)
    assert len(rises) >= 3 and np.median(rises) > 0.15
    # events decay with tau: dF/F falls by exp(-1/(tau*fps)) per frame without new events
    g = np.exp(-1 / (cfg.tau * cfg.frame_rate))
    i = int(np.argmax([len(s) for s in sim.spikes]))
    quiet = np.setdiff1d(np.arange(1, cfg.frames), sim.spikes[i])
    np.testing.assert_allclose(sim.dff[i, quiet], g * sim.dff[i, quiet - 1], rtol=1e-4, atol=1e-6)


def test_bad_config():
    with pytest.raises(UserError, match="photons"):
        SimConfig(photons=0)
    with pytest.raises(UserError, match="frame rate"):
        SimConfig(frame_rate=-1)


@pytest.mark.parametrize("ext", [".tif", ".h5", ".npy"])
def test_save_and_load_round_trip(tmp_path, ext):
    sim = simulate_movie(SimConfig(seed=5, frames=40, height=32, width=40))
    movie_path, tpath = save_simulation(sim, tmp_path / f"sim{ext}")
    assert tpath == tmp_path / "sim.truth.h5" == truth_path(movie_path)
    with open_movie(movie_path) as m:
        np.testing.assert_array_equal(m.read(0, len(m)), sim.noisy)
    for p in (movie_path, tpath):
        truth = load_truth(p)
        assert isinstance(truth.clean, TruthFrames)  # read on demand, not loaded
        assert truth.clean.shape == sim.clean.shape and truth.clean.dtype == np.float32 and len(truth.clean) == 40
        np.testing.assert_array_equal(truth.clean, sim.clean)
        np.testing.assert_array_equal(truth.clean[5:9], sim.clean[5:9])
        np.testing.assert_array_equal(truth.clean[7], sim.clean[7])
        np.testing.assert_array_equal(truth.clean.read(30, 40), sim.clean[30:40])
        idx = np.array([9, 2, 2, -1])  # any order, repeats, negative: like numpy
        np.testing.assert_array_equal(truth.clean[idx], sim.clean[idx])
        np.testing.assert_array_equal(truth.clean[idx, 3:5], sim.clean[idx, 3:5])
        truth.clean.close()
        np.testing.assert_array_equal(truth.masks, sim.masks)
        np.testing.assert_array_equal(truth.traces, sim.traces)
        assert len(truth.spikes) == len(sim.spikes)
        for a, b in zip(truth.spikes, sim.spikes):
            np.testing.assert_array_equal(a, b)
        assert truth.config == sim.config
    with open_movie(tpath) as m:  # the truth file opens as the clean movie
        np.testing.assert_array_equal(m.read(0, len(m)), sim.clean)


def test_truth_file_is_compressed_and_clean_sits_on_its_grid(tmp_path):
    """The clean movie is rounded to CLEAN_STEP ADU, so the truth file stores it losslessly in far less space
    than float32 (measured at 2000x256x256 in docs/benchmarks.md)."""
    import h5py

    sim = simulate_movie(SimConfig(seed=1, frames=64, height=64, width=64))
    assert np.array_equal(np.rint(sim.clean / CLEAN_STEP) * CLEAN_STEP, sim.clean)
    _, tpath = save_simulation(sim, tmp_path / "s.tif")
    with h5py.File(tpath, "r") as f:
        assert f["clean"].compression == "gzip" and f["clean"].chunks[1:] == (64, 64)
    assert tpath.stat().st_size < 0.5 * sim.clean.nbytes


def test_old_uncompressed_truth_files_are_still_memory_mapped(tmp_path):
    import h5py

    sim = simulate_movie(SimConfig(seed=2, frames=20, height=16, width=16))
    movie, tpath = save_simulation(sim, tmp_path / "s.tif")
    with h5py.File(tpath, "a") as f:  # rewrite clean as the earlier versions did: contiguous, uncompressed
        del f["clean"]
        f.create_dataset("clean", data=sim.clean)
    truth = load_truth(movie)
    assert isinstance(truth.clean, np.memmap)
    np.testing.assert_array_equal(truth.clean, sim.clean)


def test_progress_callbacks_count_every_frame(tmp_path):
    seen = {"sim": [], "save": []}
    sim = simulate_movie(SimConfig(seed=2, frames=150, height=16, width=16), on_frames=seen["sim"].append)
    save_simulation(sim, tmp_path / "s.h5", on_frames=seen["save"].append)
    assert sum(seen["sim"]) == 150 and len(seen["sim"]) > 1
    assert sum(seen["save"]) == 150 and len(seen["save"]) > 1


def test_load_truth_missing(tmp_path):
    with pytest.raises(UserError, match="no ground truth"):
        load_truth(tmp_path / "x.tif")


def test_speed_small():
    """Only catches a pathological slowdown (e.g. a per-pixel Python loop): CPU time of this process, which a
    loaded machine does not inflate the way it does wall time; the simulator's speed is not measured here."""
    t0 = time.process_time()
    simulate_movie(SimConfig(frames=500, height=128, width=128))
    assert time.process_time() - t0 < 15  # ~0.6 s of CPU on one core


@pytest.mark.slow
def test_speed_full_size():
    t0 = time.perf_counter()
    simulate_movie(SimConfig(frames=2000, height=256, width=256))
    assert time.perf_counter() - t0 < 30
