import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from livedenoise.errors import UserError
from livedenoise.models.checkpoint import load_model, save_checkpoint
from livedenoise.models.registry import build_network, min_frames
from livedenoise.train.samples import MovieSource, SampleMaker, sample_norm
from livedenoise.train.imaging import TrainConfig, make_card, train


def tiny_movie(n=48, h=24, w=24, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    blob = np.exp(-((yy - h / 2) ** 2 + (xx - w / 3) ** 2) / 12.0)
    clean = np.stack([6 + 8 * blob * (1 + np.sin(t / 4.0)) for t in range(n)])
    return rng.poisson(clean).astype(np.uint16)


def index_movie(n=40, h=16, w=16):
    """Frame t is filled with the value t: samples reveal which frames they used."""
    return np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None], (n, h, w)).copy()


def quick(**kw):
    base = dict(steps=4, crop=16, batch=2, val_every=2, val_samples=4, progress=False, pre=3, post=1)
    base.update(kw)
    return TrainConfig(**base)


def _maker(card, movie, crop=16, seed=0):
    return SampleMaker(card, [MovieSource(movie)], crop, np.random.default_rng(seed), augment=False)


@pytest.mark.parametrize("post,omission", [(0, 0), (1, 0), (2, 1)])
def test_interp2d_samples_target_frame_t_never_an_input(post, omission):
    card = make_card(quick(pre=3, post=post, omission=omission))
    movie = index_movie()
    mk = _maker(card, movie)
    for _ in range(30):
        x, y = mk.one()
        t = int(y[0, 0, 0])
        used = set(x[:, 0, 0].astype(int))
        assert t not in used
        assert all(abs(j - t) > omission for j in used)
        assert max(used) <= t + card.lag
        expected = card.window.source_indices(t, last=len(movie) - 1)
        assert list(x[:, 0, 0].astype(int)) == list(expected)


@pytest.mark.parametrize("post,omission", [(0, 0), (1, 0), (3, 0), (1, 1)])
def test_cad3d_samples_are_odd_even_substacks(post, omission):
    card = make_card(quick(arch="cad3d", pre=6, post=post, omission=omission))
    mk = _maker(card, index_movie())
    shift = omission + 1
    for _ in range(20):
        x, y = mk.one()
        xi, yi = x[:, 0, 0].astype(int), y[:, 0, 0].astype(int)
        assert np.all(np.diff(xi) == 2 * shift)  # inputs s, s+2, ... (stride 2(m+1))
        assert np.array_equal(yi, xi + shift)    # target i = input i + (m+1)
        assert len(xi) == card.n_inputs


def test_augmentation_applies_the_same_transform_to_input_and_target():
    movie = tiny_movie()
    card = make_card(quick())
    mk = SampleMaker(card, [MovieSource(movie)], 16, np.random.default_rng(0), augment=True)
    plain = SampleMaker(card, [MovieSource(movie)], 16, np.random.default_rng(0), augment=False)
    # the same rng draws: the augmented pair is a rot/flip of the plain pair (checked via a spatial ramp)
    ramp = np.broadcast_to(np.arange(24, dtype=np.float32)[None, :, None] * 100 + np.arange(24)[None, None, :], (48, 24, 24)).copy()
    mk = SampleMaker(card, [MovieSource(ramp)], 16, np.random.default_rng(3), augment=True)
    for _ in range(10):
        x, y = mk.one()
        for c in range(x.shape[0]):
            assert np.array_equal(x[c], y[0])
    assert plain.crop == 16


def test_norm_is_estimated_from_frames():
    movie = tiny_movie()
    mean, std = sample_norm([MovieSource(movie)], max_frames=1000)
    assert mean == pytest.approx(float(movie.mean()), rel=1e-6)
    assert std == pytest.approx(float(movie.astype(np.float64).std()), rel=1e-4)


@pytest.mark.parametrize("arch", ["interp2d", "cad3d"])
def test_train_returns_card_state_and_history(arch):
    movie = tiny_movie()
    card, state, hist = train([movie], quick(arch=arch))
    assert card.arch == arch
    assert card.norm_std > 0 and card.norm_mean > 0
    assert card.training["steps"] == 4 and card.training["validation_frames"] > 0
    assert len(hist["loss"]) == 4 and all(np.isfinite(hist["loss"]))
    assert hist["val_loss"] and hist["best_step"] in hist["val_step"]
    assert hist["best_val_loss"] == min(hist["val_loss"])
    net = build_network(card)
    net.load_state_dict(state)
    assert getattr(net, "all_positions", False) is False


def test_innovation_step_is_tuned_on_validation_frames_into_the_card():
    sim_movie = tiny_movie(n=60)
    card, _, _ = train([sim_movie], quick(post=0))
    tuning = card.training["innovation_tuning"]
    assert tuning is not None, "an untrained network leaves plenty of innovation to add back"
    assert card.innovation == {"sigma_xy": tuning["sigma_xy"], "k": tuning["k"], "exclude": tuning["exclude"]}
    assert tuning["loss_best"] < tuning["loss_prediction"] and tuning["frames"] == 6  # the validation block
    card, _, _ = train([sim_movie], quick(post=0, tune_innovation=False))
    assert card.innovation is None and card.training["innovation_tuning"] is None


def test_same_seed_same_steps_gives_identical_weights_and_other_seed_differs():
    movie = tiny_movie()
    _, a, _ = train([movie], quick(seed=3))
    _, b, _ = train([movie], quick(seed=3))
    _, c, _ = train([movie], quick(seed=4))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_separate_validation_movie_and_too_few_frames():
    movie = tiny_movie()
    card, _, hist = train([movie], quick(), val_movies=[tiny_movie(seed=5)])
    assert card.training["frames"] == 48 and card.training["validation_frames"] == 48
    cad = make_card(quick(arch="cad3d", pre=8))
    with pytest.raises(UserError, match=f"has 5 frames but this cad3d model needs at least {min_frames(cad)}"):
        train([movie[:5]], quick(arch="cad3d", pre=8))


def test_init_fine_tunes_moves_to_another_window_and_refuses_another_arch(tmp_path):
    movie = tiny_movie()
    card, state, _ = train([movie], quick())
    path = save_checkpoint(tmp_path / "m.pt", card, state)
    card2, state2, _ = train([movie], quick(init=str(path), steps=2))
    assert card2.training["init"] == str(path)
    # a shorter lag: the first layer's future offsets fold onto the nearest kept one (models/retarget.py)
    card3, _, _ = train([movie], quick(init=str(path), post=0, steps=1))
    assert card3.lag == 0 and "folded" in card3.training["init"]
    with pytest.raises(ValueError, match="cannot start"):
        train([movie], quick(init=str(path), arch="cad3d", pre=8, steps=1))


def test_losses_and_bad_config():
    movie = tiny_movie()
    for loss in ("l1", "l2", "mixed"):
        card, _, _ = train([movie], quick(loss=loss, steps=1))
        assert card.training["loss"] == loss
    with pytest.raises(ValueError):
        train([movie], quick(loss="huber"))
    with pytest.raises(ValueError):
        train([movie], quick(arch="classic"))


def test_reader_movie_is_accepted(tmp_path):
    readers = pytest.importorskip("livedenoise.io.readers")
    np.save(tmp_path / "m.npy", tiny_movie())
    mv = readers.open_movie(tmp_path / "m.npy")
    card, _, _ = train([mv], quick(steps=1))
    assert card.training["frames"] + card.training["validation_frames"] == 48
    src = MovieSource(mv, 4, 40, in_memory_bytes=0)  # frame-by-frame path
    assert src.crop([0, 1], 2, 3, 8).shape == (2, 8, 8)
    np.testing.assert_array_equal(src.crop([0], 0, 0, 4)[0], tiny_movie()[4, :4, :4])


@pytest.mark.skipif(sys.platform != "linux", reason="torchrun test runs on Linux")
def test_torchrun_two_cpu_processes(tmp_path):
    pytest.importorskip("torch.distributed.run")
    np.save(tmp_path / "m.npy", tiny_movie())
    out = tmp_path / "m.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "livedenoise", "train", str(tmp_path / "m.npy"), "--out", str(out), "--pre", "3", "--post", "1",
           "--steps", "3", "--crop", "16", "--batch", "2", "--device", "cpu", "--quiet", "--val-every", "1"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[:2000] + "\n...\n" + r.stderr[-1000:]
    card, net = load_model(out)
    assert card.training["world_size"] == 2 and card.training["steps"] == 3


def test_non_finite_pixels_are_left_out_of_training():
    # a motion-corrected float32 movie: NaN borders (~5% of pixels) and one Inf patch
    movie = tiny_movie(n=60, h=32, w=32).astype(np.float32)
    movie[:, :, :1] = np.nan
    movie[:, :1, :] = np.nan
    movie[10:20, 8:14, 8:14] = np.inf
    card, state, history = train([movie], quick(steps=8))
    assert all(np.isfinite(history["loss"])) and np.isfinite(card.training["best_val_loss"])
    finite = movie[np.isfinite(movie)]
    assert card.norm_mean == pytest.approx(float(finite.mean()), rel=0.05)  # over the training frames
    assert card.norm_std == pytest.approx(float(finite.std()), rel=0.1)
    assert all(np.isfinite(v).all() for v in (t.numpy() for t in state.values()))


def test_the_default_preset_brings_its_own_crop_and_learning_rate():
    default = TrainConfig().resolved()
    assert (default.arch, default.preset, default.pre, default.post) == ("interp2d", "fast", 16, 1)
    assert (default.crop, default.lr) == (128, 2e-3)
    lite = TrainConfig(preset="lite").resolved()
    assert (lite.pre, lite.post, lite.crop, lite.lr) == (8, 1, 64, 1e-3)
    assert TrainConfig(crop=32, lr=5e-4).resolved().crop == 32  # what the user says wins
