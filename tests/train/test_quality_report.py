"""The quality report without ground truth (train/quality.py): its losses rank estimators by their true error."""

import json
import subprocess
import sys

import numpy as np
import pytest

from livedenoise.train.quality import noise_variance, quality_report, summary_lines


def moving_blob(n=160, h=40, w=40, base=50.0):
    yy, xx = np.mgrid[:h, :w]
    blob = np.exp(-((yy - h / 2) ** 2 + (xx - w / 3) ** 2) / 30.0)
    return np.stack([base * (1 + 0.6 * blob * (1 + np.sin(t / 6.0))) for t in range(n)])


def test_noise_variance_recovers_gaussian_and_poisson_noise():
    rng = np.random.default_rng(1)
    s = moving_blob()
    assert noise_variance(s + rng.normal(0, 2.0, s.shape)) == pytest.approx(4.0, rel=0.05)
    rate = s / 10  # ~5-10 photons: Poisson variance = mean
    assert noise_variance(rng.poisson(rate).astype(np.float32)) == pytest.approx(rate.mean(), rel=0.05)


def test_losses_are_true_error_plus_the_noise_floor():
    rng = np.random.default_rng(2)
    s = moving_blob()
    x = s + rng.normal(0, 2.0, s.shape)
    perfect = quality_report(x, s, past=8, lag=1)
    assert perfect["loss"]["model"] == pytest.approx(1.0, abs=0.05)  # the noise floor
    # an estimate with a known error (variance 1 = a quarter of the noise variance 4): loss 1 + 0.25
    err = quality_report(x, s + rng.normal(0, 1.0, s.shape), past=8, lag=1)
    assert err["loss"]["model"] == pytest.approx(1.25, abs=0.06)
    loss = perfect["loss"]
    assert loss["model"] < loss["classic"] < loss["previous_frame"]
    assert perfect["model_beats_classic"] and not perfect["warnings"]
    assert perfect["classic"]["lag"] == 1 and perfect["classic"]["past"] <= 8


def test_warns_when_the_model_loses_to_the_classic_filter_or_is_flat():
    rng = np.random.default_rng(3)
    s = moving_blob()
    x = s + rng.normal(0, 2.0, s.shape)
    flat = np.repeat(x.mean(axis=0, keepdims=True), len(x), axis=0)
    r = quality_report(x, flat, past=4, lag=0)
    assert not r["model_beats_classic"] and r["flat_output"]
    text = "\n".join(summary_lines(r))
    assert "does not beat the best classic filter" in text and "nearly flat" in text


def test_classic_baseline_never_reads_the_frame_it_scores():
    # pure noise, no signal: any estimator blind to frame t scores >= the noise floor; one that read
    # frame t would score far below it
    rng = np.random.default_rng(4)
    x = rng.normal(100.0, 3.0, (120, 24, 24))
    r = quality_report(x, np.full_like(x, 100.0), past=8, lag=2)
    assert r["loss"]["classic"] >= 0.97
    assert r["loss"]["model"] == pytest.approx(1.0, abs=0.05)


def test_refuses_too_few_frames():
    x = np.random.default_rng(5).normal(0, 1, (6, 8, 8))
    with pytest.raises(ValueError, match="need at least 3"):
        quality_report(x, x, past=4, lag=1)


def test_train_selects_by_held_out_loss_and_reports(tmp_path):
    rng = np.random.default_rng(6)
    movie = rng.poisson(moving_blob(n=200, h=32, w=32) / 5).astype(np.uint16)
    np.save(tmp_path / "m.npy", movie)
    out = tmp_path / "m.pt"
    cmd = [sys.executable, "-m", "livedenoise", "train", str(tmp_path / "m.npy"), "--out", str(out), "--pre", "4",
           "--post", "1", "--steps", "20", "--crop", "16", "--batch", "2", "--device", "cpu", "--quiet",
           "--val-every", "5", "--val-fraction", "0.3", "--json", "--no-tune-innovation"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    sel = summary["card"]["training"]["selection"]
    assert sel["selected"] == min(sel["held_out_loss"], key=sel["held_out_loss"].get)
    q = summary["quality"]
    assert q["held_out"] and q["frames"] >= 50
    assert set(q["loss"]) == {"model", "classic", "previous_frame", "noise_floor"}
    assert "classic filter" in r.stderr and "previous frame" in r.stderr


def test_denoise_report_with_the_innovation_step_says_what_noise_it_passes(tmp_path):
    """`denoise --report --innovation`: the step reads frame t, so the losses cannot score it; the report gives its
    trade instead: the fraction of the movie's noise variance it lets through (models.innovation.noise_passed)."""
    from livedenoise.models.checkpoint import read_checkpoint, save_checkpoint
    from livedenoise.models.innovation import InnovationConfig, noise_passed
    from tests.export.checkpoints import make_checkpoint

    rng = np.random.default_rng(8)
    movie = rng.poisson(moving_blob(n=60, h=32, w=32) / 5).astype(np.uint16)
    np.save(tmp_path / "m.npy", movie)
    make_checkpoint(tmp_path / "m.pt", pre=4, post=1, mean=float(movie.mean()), std=float(movie.std()))
    card, state = read_checkpoint(tmp_path / "m.pt")
    card.innovation = {"sigma_xy": 1.5, "k": 2.0, "exclude": 0}
    save_checkpoint(tmp_path / "m.pt", card, state)
    base = [sys.executable, "-m", "livedenoise", "denoise", str(tmp_path / "m.npy"), str(tmp_path / "o.tif"),
            "--model", str(tmp_path / "m.pt"), "--report", "--json", "--quiet"]
    plain = subprocess.run(base, capture_output=True, text=True, timeout=600)
    assert plain.returncode == 0, plain.stderr
    assert "innovation" not in json.loads(plain.stdout)["quality"]
    r = subprocess.run(base + ["--innovation"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    inn = json.loads(r.stdout)["quality"]["innovation"]
    assert (inn["sigma_xy"], inn["k"]) == (1.5, 2.0)
    assert inn["noise_passed"] == pytest.approx(noise_passed(movie.astype(np.float32), InnovationConfig(1.5, 2.0, 0)),
                                                rel=1e-5)
    human = subprocess.run(base[:-2] + ["--innovation"], capture_output=True, text=True, timeout=600)
    assert "of this movie's noise variance" in human.stdout + human.stderr
