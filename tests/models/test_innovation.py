"""The innovation step: restores onsets a prediction missed, passes no noise, and tunes without ground truth."""

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from livedenoise.errors import UserError
from livedenoise.models.card import ModelCard
from livedenoise.models.innovation import (InnovationConfig, InnovationStep, applies_to, config_for, noise_passed,
                                          noise_radius, tune)
from livedenoise.sim.imaging import simulate_movie
from livedenoise.models.window import WindowSpec


def _blob(h=64, w=64, cy=30, cx=20, r=4.0):
    yy, xx = np.mgrid[:h, :w]
    return ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.float32)


def _card(offsets, layout="frames", innovation=None):
    return ModelCard("interp2d", {"preset": "lite"}, "2p", 2, 0, 0, list(offsets), layout=layout, innovation=innovation)


def test_onset_the_prediction_missed_is_restored_and_noise_is_not_added():
    rng = np.random.default_rng(0)
    background = np.full((8, 64, 64), 20.0, np.float32)
    clean = background + 15.0 * _blob()[None]  # a soma lights up in every frame
    raw = rng.poisson(clean).astype(np.uint16)
    pred = background.copy()  # the model did not see it coming
    out = InnovationStep(InnovationConfig(2.0, 4.0, exclude=0)).apply(pred.copy(), raw)  # independent pixels
    inside, outside = _blob() > 0, _blob(r=12.0) == 0
    assert out[:, inside].mean() - 20 > 0.5 * 15, "most of the onset is restored"
    assert np.mean((out - clean) ** 2) < 0.5 * np.mean((pred - clean) ** 2)
    noise_added = np.abs(out[:, outside] - pred[:, outside]).mean()
    assert noise_added < 0.1 * np.abs(raw[:, outside] - clean[:, outside]).mean(), "background noise stays out"


@pytest.mark.parametrize("exclude", [0, 1, 2])
def test_output_at_a_pixel_never_reads_the_excluded_block_of_frame_t(exclude):
    rng = np.random.default_rng(1)
    pred = np.full((1, 48, 48), 30.0, np.float32)
    raw = rng.poisson(30.0 + 20 * _blob(48, 48, 24, 24)[None]).astype(np.float32)
    step = InnovationStep(InnovationConfig(2.0, 1.0, exclude))
    base = step.apply(pred.copy(), raw)
    for y, x in [(24, 24), (0, 0), (47, 20), (10, 30)]:  # inside the blob, corners and edges
        bumped = raw.copy()
        bumped[0, y, x] += 1000.0
        out = step.apply(pred.copy(), bumped)
        # every pixel within `exclude` of it: moved only through the frame's median noise level (one
        # order statistic of the ~2300 pixels: a fraction of a count against the 1000 added)
        for dy in range(-exclude, exclude + 1):
            for dx in range(-exclude, exclude + 1):
                py, px = y + dy, x + dx
                if 0 <= py < 48 and 0 <= px < 48:
                    assert abs(out[0, py, px] - base[0, py, px]) < 0.25, (y, x, dy, dx)
        ny, nx = (y + exclude + 1 if y < 40 else y - exclude - 1), x
        assert abs(out[0, ny, nx] - base[0, ny, nx]) > 1.0, "pixels beyond the block do read it"


def test_noise_radius_finds_spatially_correlated_noise():
    rng = np.random.default_rng(7)
    clean = 50.0 + 30.0 * _blob()[None]
    iid = clean + rng.normal(0, 3.0, (40, 64, 64))
    assert noise_radius(iid) == 0
    # noise shared by neighbours (a 3-pixel blur of white noise, e.g. from motion-correction resampling)
    noise = gaussian_filter(rng.normal(0, 6.0, (40, 64, 64)), (0, 1.0, 1.0))
    shared = clean + noise
    assert noise_radius(shared) >= 2
    # a perfect prediction: the innovation is pure (correlated) noise, nothing to restore. Tuning that leaves
    # the correlated block out passes (almost) none of it; leaving out the centre tap only passes ~10%
    pred = np.repeat(clean, 40, axis=0).astype(np.float32)

    def passed(exclude):
        cfg, report = tune(pred, shared, exclude=exclude)
        out = pred.copy() if cfg is None else InnovationStep(cfg).apply(pred.copy(), shared)
        return float(np.mean((out - pred) ** 2) / np.mean(noise ** 2)), report

    fraction, report = passed(None)
    assert report["exclude"] == noise_radius(shared)
    assert fraction < 1e-3
    assert passed(0)[0] > 0.05  # what the centre tap alone lets through (the test can fail)


def test_tuning_on_raw_frames_alone_lowers_the_error_against_the_truth():
    sim = simulate_movie(frames=160, height=64, width=64, photons=1.0, seed=3, spike_rate=2.0)
    raw = sim.noisy.astype(np.float32)
    pred = np.empty_like(raw)  # a causal predictor that never reads frame t: the blurred mean of the 8 before it
    pred[0] = raw[0]
    for t in range(1, len(raw)):
        pred[t] = gaussian_filter(raw[max(0, t - 8):t].mean(axis=0), 1.0)
    cfg, report = tune(pred, raw)
    assert cfg is not None and report["loss_best"] < report["loss_prediction"]
    out = InnovationStep(cfg).apply(pred.copy(), raw)
    err = lambda x: float(np.mean((x - sim.clean) ** 2))  # noqa: E731
    assert err(out) < err(pred)
    assert {(r["sigma_xy"], r["k"]) for r in report["grid"]} >= {(cfg.sigma_xy, cfg.k)}


def test_tuning_finds_nothing_to_add_to_a_perfect_prediction():
    clean = np.full((6, 32, 32), 50.0, np.float32)
    raw = np.random.default_rng(2).poisson(clean).astype(np.float32)
    _, report = tune(clean.copy(), raw)  # the innovation is pure noise: at best a chance gain
    assert report["loss_best"] > 0.999 * report["loss_prediction"]
    cfg, report = tune(raw.copy(), raw)  # nothing left to add at all
    assert cfg is None and report["loss_best"] == report["loss_prediction"] == 0.0


def test_batches_and_single_frames_give_the_same_frames():
    rng = np.random.default_rng(4)
    raw = rng.poisson(20, (7, 40, 56)).astype(np.int16)
    pred = rng.normal(20, 1, (7, 40, 56)).astype(np.float32)
    step = InnovationStep(InnovationConfig())
    whole = step.apply(pred.copy(), raw)
    single = np.concatenate([step.apply(pred[i:i + 1].copy(), raw[i:i + 1]) for i in range(7)])
    np.testing.assert_array_equal(whole, single)


def test_models_that_read_frame_t_or_ephys_data_are_refused():
    assert applies_to(_card([-2, -1])) is None
    assert "already reads" in applies_to(ModelCard("classic", {}, "2p", 2, 0, 0, [-2, -1, 0]))
    assert "imaging" in applies_to(_card([-2, -1], layout="channels_time"))
    with pytest.raises(UserError, match="--innovation: the innovation step adds back frame t"):
        config_for(ModelCard("classic", {}, "2p", 2, 0, 0, list(WindowSpec((-2, -1, 0)).offsets)))


def test_card_settings_defaults_and_override():
    tuned = _card([-2, -1], innovation={"sigma_xy": 2.0, "k": 8.0})
    assert config_for(tuned) == (InnovationConfig(2.0, 8.0, exclude=0), "tuned at training")  # card before `exclude`
    cfg, origin = config_for(_card([-2, -1]))
    assert cfg == InnovationConfig() and origin == "defaults: this model predates tuning"
    untuned = _card([-2, -1])
    untuned.training = {"innovation_tuning": None}
    assert config_for(untuned)[1].startswith("defaults: training skipped tuning")
    cfg, origin = config_for(tuned, k=1.5)
    assert cfg == InnovationConfig(2.0, 1.5, exclude=0) and "command line" in origin
    again = ModelCard.from_json(tuned.to_json())
    assert again.innovation == {"sigma_xy": 2.0, "k": 8.0, "exclude": 0}


@pytest.mark.parametrize("bad", [{"sigma_xy": 0.0, "k": 4.0}, {"sigma_xy": 2.0, "k": -1.0}, {"sigma_xy": "x", "k": 1},
                                 {"k": 1.0}])
def test_bad_settings_are_one_line_errors(bad):
    with pytest.raises(UserError) as exc:
        _card([-2, -1], innovation=bad)
    assert "\n" not in str(exc.value) and "innovation" in str(exc.value)


def test_noise_passed_is_the_variance_the_step_lets_through_from_the_movies_own_noise():
    rng = np.random.default_rng(3)
    static = 200.0 + 100.0 * _blob()[None]  # a bright soma that never changes: no onset, nothing to pass
    noise = rng.normal(0, 5.0, (202, 64, 64)).astype(np.float32)
    movie = (static + noise).astype(np.float32)
    assert noise_passed(np.repeat(static, 10, axis=0), InnovationConfig(1.5, 0.0)) == 0.0  # no noise, nothing passed
    # k = 0 shrinks nothing: white noise passes sum(w^2) of the step's smoothing kernel (centre tap left out)
    delta = np.zeros((1, 64, 64), np.float32)
    delta[0, 32, 32] = 1.0
    kernel = InnovationStep(InnovationConfig(1.5, 0.0)).apply(np.zeros_like(delta), delta)
    want = float(np.sum(kernel ** 2))
    assert 0.01 < want < 0.1
    got = noise_passed(movie, InnovationConfig(1.5, 0.0))
    assert got == pytest.approx(want, rel=0.15)
    # the static soma does not count (second temporal differences), and shrinkage passes less
    assert noise_passed(noise, InnovationConfig(1.5, 0.0)) == pytest.approx(got, rel=1e-3)
    assert noise_passed(movie, InnovationConfig(1.5, 4.0)) < 0.2 * got


def test_noise_level_on_a_pixel_grid_matches_the_full_frame_median():
    # 512 x 512: the median of e^2 is taken on every 4th pixel; the shrinkage must equal (within the median's
    # ~1% sampling error) what the full-frame median gives, so the step is the same function at every frame size
    rng = np.random.default_rng(3)
    raw = rng.poisson(20.0 + 30.0 * _blob(512, 512, 200, 300, 12.0)[None], size=(2, 512, 512)).astype(np.float32)
    pred = np.full_like(raw, 20.0)
    step = InnovationStep(InnovationConfig(2.0, 4.0, exclude=0))
    e = step._smoothed(pred, raw).copy()
    assert step._stride == 4 and step._sq.shape == (128, 128)
    sub = step.apply(pred.copy(), raw)
    full = pred.copy()
    var = np.median(np.square(e), axis=(1, 2)) / 0.454936423119572
    wgt = np.clip(1.0 - 4.0 * var[:, None, None] / np.maximum(np.square(e), 1e-30), 0.0, 1.0)
    full += wgt * e
    assert np.abs(sub - full).max() < 0.02 * np.abs(full - pred).max()
    small = InnovationStep(InnovationConfig(2.0, 4.0, exclude=0))
    small.apply(pred[:, :128, :128].copy(), raw[:, :128, :128])
    assert small._stride == 1, "frames up to 128 x 128 use every pixel"


@pytest.mark.parametrize("shape,sigma,exclude", [((2, 37, 50), 2.0, 0), ((1, 64, 64), 3.0, 1), ((3, 20, 90), 4.0, 2),
                                                 ((1, 9, 11), 4.0, 4)])
def test_fft_smoothing_equals_the_gaussian_with_its_block_removed(shape, sigma, exclude):
    """The step's smoothing, written out with scipy.ndimage: the zero-padded Gaussian minus the taps within
    `exclude` of the centre, over the weight of the kept taps that fall inside the frame."""
    from scipy.ndimage import correlate1d

    rng = np.random.default_rng(5)
    raw = rng.poisson(20.0, shape).astype(np.float32)
    pred = np.full(shape, 20.0, np.float32)
    d = (raw - pred).astype(np.float64)
    r = int(3.0 * sigma + 0.5)
    taps = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    taps /= taps.sum()
    block = taps[r - exclude:r + exclude + 1]

    def sep(a, t):
        return correlate1d(correlate1d(a, t, axis=-2, mode="constant"), t, axis=-1, mode="constant")

    ones = np.ones(shape[1:])
    expected = (sep(d, taps) - sep(d, block)) / (sep(ones, taps) - sep(ones, block))
    got = InnovationStep(InnovationConfig(sigma, 1.0, exclude))._smoothed(pred, raw)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * np.abs(expected).max())
