"""Self-supervised training on fMRI volumes: cubic crops by the blind-spot window, and a short run of `train`."""

import numpy as np
import pytest

from livedenoise.models import registry
from livedenoise.train.imaging import TrainConfig, train
from livedenoise.train.samples import MovieSource, SampleMaker


def _run(t=20, shape=(10, 12, 9), seed=0):
    return np.random.default_rng(seed).normal(500.0, 20.0, (t, *shape)).astype(np.float32)


def test_volume_crops_follow_the_blind_window():
    vols = _run()
    card = registry.make_card("fmri-blind", pre=3, post=1, norm_mean=500.0, norm_std=20.0)
    src = MovieSource(vols, name="run")
    assert src.frame_shape == (10, 12, 9)
    block = src.crop([4, 5], 1, 2, 3, 6)
    np.testing.assert_array_equal(block, vols[[4, 5], 1:7, 2:8, 3:9])
    with pytest.raises(ValueError, match="3 corner"):
        src.crop([4], 1, 2, 6)
    maker = SampleMaker(card, [src], crop=16, rng=np.random.default_rng(1), augment=False)
    assert maker.crop == 9  # the smallest axis caps the cube
    x, y = maker.batch(6)
    assert x.shape == (6, 5, 9, 9, 9) and y.shape == (6, 1, 9, 9, 9)
    # the target is volume t itself, also the input at offset 0 (the network hides its centre voxel)
    np.testing.assert_array_equal(x[:, card.offsets.index(0)], y[:, 0])
    # augmentation of volumes: a flip along I only (axes never swapped), the same for input and target
    from livedenoise.train.samples import _augment

    rng = np.random.default_rng(2)
    seen = set()
    for _ in range(12):
        xa, ya = _augment(x[0], y[0], rng)
        flipped = np.array_equal(xa, x[0][:, ::-1])
        assert flipped or np.array_equal(xa, x[0])
        np.testing.assert_array_equal(ya, y[0][:, ::-1] if flipped else y[0])
        seen.add(flipped)
    assert seen == {True, False}


def test_the_window_defaults_to_the_architectures():
    cfg = TrainConfig(arch="fmri-blind").resolved()
    assert (cfg.pre, cfg.post, cfg.omission, cfg.crop, cfg.preset) == (2, 2, 0, 16, "fast")
    assert (TrainConfig().resolved().pre, TrainConfig().resolved().post) == (16, 1)  # interp2d fast's (issue 14)


def test_train_fits_a_run_and_records_volumes():
    card, state, hist = train([_run(16)], TrainConfig(arch="fmri-blind", pre=2, post=2, steps=3, crop=8, batch=2,
                                                      progress=False, val_every=2, tune_innovation=True))
    assert (card.arch, card.modality, card.layout, card.lag) == ("fmri-blind", "fmri", "volumes", 2)
    assert card.training["frame_shape"] == [10, 12, 9] and card.training["steps"] == 3
    assert card.innovation is None  # the innovation step is for 2D frames
    assert "skipped" in card.training["selection"]["quality"]  # the 2D quality report says why it is not there
    net = registry.build_network(card)
    net.load_state_dict(state)
