"""The fMRI simulator and its metrics: the temporal SNR asked for, a brain-shaped mask, an exact activation
extent, and metrics that catch what they claim to (noise, smearing)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from livedenoise.errors import UserError
from livedenoise.sim import fmri_metrics as M
from livedenoise.sim.fmri import FmriConfig, hrf, load_fmri_truth, save_fmri, simulate_fmri, task_regressor


@pytest.fixture(scope="module")
def sim():
    return simulate_fmri(FmriConfig(shape=(24, 28, 22), volumes=120, tsnr=20.0, seed=3))


def test_same_seed_same_run_and_the_thermal_tsnr_asked_for(sim):
    again = simulate_fmri(FmriConfig(shape=(24, 28, 22), volumes=120, tsnr=20.0, seed=3))
    np.testing.assert_array_equal(again.noisy, sim.noisy)
    noise = sim.noisy - sim.clean
    assert noise[:, sim.mask].std() == pytest.approx(sim.sigma, rel=0.02)
    assert sim.clean[:, sim.mask].mean() / sim.sigma == pytest.approx(20.0, rel=0.02)
    # measured voxel tSNR of the noisy run: just under 20 (the BOLD fluctuations add a little variance)
    assert 15.0 < np.median(M.tsnr(sim.noisy, sim.mask)) < 20.5


def test_mask_and_activation_are_brain_shaped_and_exact(sim):
    frac = sim.mask.mean()
    assert 0.2 < frac < 0.5  # an ellipsoid of semi-axes 0.42 fills ~31 % of the box
    assert not sim.mask[0].any() and not sim.mask[:, 0].any()  # a margin of background
    assert sim.active.any() and not (sim.active & ~sim.mask).any()
    assert (sim.clean[:, ~sim.mask] == 0).all()
    inside = sim.clean[:, sim.active] / sim.clean[:, sim.active].mean(0) - 1
    outside_far = sim.clean[:, sim.mask & ~sim.active]
    assert np.corrcoef(inside.mean(1), sim.task)[0, 1] > 0.5 and outside_far.size  # task plus resting networks


def test_hrf_and_task_regressor():
    h = hrf(2.0)
    assert h.sum() == pytest.approx(1.0) and int(np.argmax(h)) in (2, 3) and h.min() < 0  # peak at 4-6 s, undershoot
    reg = task_regressor(60, 2.0, 20.0)
    assert reg.max() == pytest.approx(1.0) and reg[:5].max() < 0.05  # off first, then the HRF's delay


def test_metrics_on_truth_and_on_noise(sim):
    clean = M.score(sim.clean, sim)
    noisy = M.score(sim.noisy, sim)
    assert clean["corr_median"] == pytest.approx(1.0) and clean["tsnr_median"] > 2 * noisy["tsnr_median"]
    assert clean["response"]["spread"] == [0.0, 0.0, 0.0] and clean["response"]["fwhm_widening"] == 0
    assert noisy["corr_median"] < 0.5
    act = M.activation_map(sim.clean + np.random.default_rng(0).normal(0, 1.0, sim.clean.shape).astype(np.float32),
                           sim.task, sim.mask, sim.active)
    assert act["sensitivity"] == 1.0 and act["cluster_max_distance"] <= 1.0


def test_smearing_spreads_the_task_response(sim):
    """A spatial blur (what a denoiser must not do) moves the task response into the voxels around the spheres;
    noise alone does not."""
    raw = M.response_profile(sim.noisy, sim)
    assert abs(raw["spread"][0]) < 0.06 and raw["fwhm_widening"] == 0 and raw["inside"] == pytest.approx(1.0, abs=0.1)
    blurred = M.response_profile(gaussian_filter(sim.noisy, sigma=(0, 1.0, 1.0, 1.0)), sim)
    assert blurred["spread"][0] > 0.1 and blurred["inside"] < 0.8
    wide = M.response_profile(gaussian_filter(sim.noisy, sigma=(0, 1.5, 1.5, 1.5)), sim)
    assert wide["fwhm_widening"] >= 1


def test_save_and_load_the_truth(sim, tmp_path):
    from livedenoise.io.nifti import open_nifti

    run, truth = save_fmri(sim, tmp_path / "sub-02_task-x_bold.nii.gz")
    assert truth.name == "sub-02_task-x_bold.truth.h5"
    back = load_fmri_truth(truth)
    np.testing.assert_array_equal(back.clean, sim.clean)
    np.testing.assert_array_equal(back.active, sim.active)
    assert back.sigma == sim.sigma and back.cfg.shape == sim.cfg.shape
    with open_nifti(run) as r:
        assert r.tr == 2.0 and r.units == ("mm", "sec") and len(r) == 120
        np.testing.assert_array_equal(r.read(0, 120), sim.noisy)
    with pytest.raises(UserError, match="not an fMRI ground truth"):
        load_fmri_truth(run)
    with pytest.raises(UserError, match="at least 8"):
        FmriConfig(shape=(4, 30, 30))
