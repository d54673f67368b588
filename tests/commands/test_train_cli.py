import json

import numpy as np
import pytest

from livedenoise.cli import main
from livedenoise.models.checkpoint import load_model


def tiny_movie(n=40, h=24, w=24, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    blob = np.exp(-((yy - h / 2) ** 2 + (xx - w / 3) ** 2) / 12.0)
    clean = np.stack([6 + 8 * blob * (1 + np.sin(t / 4.0)) for t in range(n)]).astype(np.float32)
    return rng.poisson(clean).astype(np.int16), clean


@pytest.fixture
def movie(tmp_path):
    noisy, clean = tiny_movie()
    np.save(tmp_path / "movie.npy", noisy)
    np.save(tmp_path / "clean.npy", clean)
    return tmp_path / "movie.npy"


FAST = ["--steps", "3", "--crop", "16", "--batch", "2", "--quiet", "--val-every", "1"]


@pytest.mark.parametrize("arch,extra", [("interp2d", []), ("cad3d", ["--pre", "4"])])
def test_train_writes_a_checkpoint(movie, tmp_path, capsys, arch, extra):
    out = tmp_path / "m.pt"
    rc = main(["train", str(movie), "--arch", arch, "--post", "1", "--out", str(out), "--json", *FAST, *extra])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 3 and summary["card"]["arch"] == arch
    card, net = load_model(out)
    assert card.arch == arch and card.post == 1 and card.lag == 1
    assert card.training["sources"] == ["movie.npy"]


def test_classic_with_parameters_and_tuned(movie, tmp_path, capsys):
    out = tmp_path / "c.pt"
    assert main(["train", str(movie), "--arch", "classic", "--kind", "exp", "--tau", "3", "--sigma-xy", "1",
                 "--pre", "6", "--out", str(out)]) == 0
    card, _ = load_model(out)
    assert card.params["kind"] == "exp" and card.params["tau"] == 3.0 and card.lag == 0
    out2 = tmp_path / "t.pt"
    assert main(["train", str(movie), "--arch", "classic", "--tune-against", str(tmp_path / "clean.npy"),
                 "--post", "1", "--pre", "8", "--out", str(out2), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["card"]["post"] == 1 and summary["tuned_psnr_db"] > 0
    card2, _ = load_model(out2)
    assert card2.lag <= 1 and "tuned_psnr_db" in card2.training


@pytest.mark.parametrize("args,message", [
    (["--pre", "60", "--arch", "cad3d"], "frames"),
    (["--arch", "cad3d", "--preset", "lite"], "preset"),
    (["--kind", "exp"], "classic only"),
    (["--arch", "classic", "--omission", "1"], "omission"),
])
def test_user_errors_exit_2(movie, tmp_path, capsys, args, message):
    rc = main(["train", str(movie), "--out", str(tmp_path / "m.pt"), *FAST, *args])
    assert rc == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_output_equal_to_input_is_refused_and_input_untouched(tmp_path, capsys):
    path = tmp_path / "x.pt"
    path.write_bytes(b"not a movie")
    rc = main(["train", str(path), "--out", str(path), *FAST])
    assert rc == 2
    assert "also an input" in capsys.readouterr().err
    assert path.read_bytes() == b"not a movie"


def test_missing_movie_and_bad_suffix(tmp_path, movie, capsys):
    assert main(["train", str(tmp_path / "nope.npy"), "--out", str(tmp_path / "m.pt"), *FAST]) == 2
    assert main(["train", str(movie), "--out", str(tmp_path / "m.onnx"), *FAST]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and ".pt" in err


def test_classic_tuned_against_a_simulate_truth_file(tmp_path):
    sim_mod = pytest.importorskip("livedenoise.sim.imaging")
    sim = sim_mod.simulate_movie(sim_mod.SimConfig(frames=40, height=24, width=24, seed=3))
    path, truth = sim_mod.save_simulation(sim, tmp_path / "sim.npy")
    out = tmp_path / "c.pt"
    assert main(["train", str(path), "--arch", "classic", "--tune-against", str(truth), "--post", "0",
                 "--pre", "8", "--out", str(out)]) == 0
    card, _ = load_model(out)
    assert card.lag == 0 and card.training["tuned_against"] == truth.name
