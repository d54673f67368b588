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


def _cli(*args, cwd):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "livedenoise", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def test_one_length_rule_for_train_and_denoise(tmp_path):
    """A 6-frame movie: interp2d trains and denoises it (minimum 2 frames, the window's edge rule
    supplies the rest); cad3d needs a whole odd/even sub-stack, and `train` and `denoise` both refuse
    it naming the same minimum (registry.min_frames, registry.check_length)."""
    from livedenoise.models import registry
    from livedenoise.train.imaging import TrainConfig, make_card

    noisy, _ = tiny_movie(n=6)
    movie = tmp_path / "six.npy"
    np.save(movie, noisy)
    fast = ["--steps", "2", "--crop", "16", "--batch", "2", "--quiet", "--device", "cpu"]

    lite = tmp_path / "lite.pt"
    proc = _cli("train", movie, "--arch", "interp2d", "--out", lite, *fast, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert registry.min_frames(load_model(lite)[0]) == 2
    out = tmp_path / "six_dn.tif"
    proc = _cli("denoise", movie, out, "--model", lite, "--backend", "torch", "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert out.is_file()

    cad = make_card(TrainConfig(arch="cad3d", pre=8, post=1))
    need = registry.min_frames(cad)
    assert need > 6
    message = f"six.npy has 6 frames but this cad3d model needs at least {need}"
    proc = _cli("train", movie, "--arch", "cad3d", "--pre", "8", "--post", "1", "--out", tmp_path / "cad.pt", *fast, cwd=tmp_path)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert not (tmp_path / "cad.pt").exists()

    # a cad3d model trained on a long enough movie, then asked to denoise the short one
    long_movie = tmp_path / "long.npy"
    np.save(long_movie, tiny_movie(n=40)[0])
    cad_pt = tmp_path / "cad.pt"
    proc = _cli("train", long_movie, "--arch", "cad3d", "--pre", "8", "--post", "1", "--out", cad_pt, *fast,
                "--no-tune-innovation", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert registry.min_frames(load_model(cad_pt)[0]) == need
    proc = _cli("denoise", movie, tmp_path / "cad_dn.tif", "--model", cad_pt, "--backend", "torch", "--quiet", cwd=tmp_path)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_a_classic_filter_follows_the_same_length_rule(tmp_path):
    """`train --arch classic` fits nothing to the movie, but it refuses the movie `denoise` would refuse."""
    one = tmp_path / "one.npy"
    np.save(one, tiny_movie(n=1)[0][:1])
    proc = _cli("train", one, "--arch", "classic", "--kind", "exp", "--tau", "2", "--out", tmp_path / "c.pt", cwd=tmp_path)
    assert proc.returncode == 2 and "needs at least 2" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "c.pt").exists()
    two = tmp_path / "two.npy"
    np.save(two, tiny_movie(n=2)[0][:2])
    proc = _cli("train", two, "--arch", "classic", "--kind", "exp", "--tau", "2", "--out", tmp_path / "c.pt", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    proc = _cli("denoise", two, tmp_path / "d.tif", "--model", tmp_path / "c.pt", "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    proc = _cli("denoise", one, tmp_path / "d1.tif", "--model", tmp_path / "c.pt", "--quiet", cwd=tmp_path)
    assert proc.returncode == 2 and "needs at least 2" in proc.stderr, proc.stderr


def _read_lines(stream, sink):
    import threading

    t = threading.Thread(target=lambda: sink.extend(iter(stream.readline, "")), daemon=True)
    t.start()
    return t


def _wait_for(lines, text, proc, timeout=300.0):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(text in line for line in lines):
            return True
        if proc.poll() is not None:
            return any(text in line for line in lines)
        time.sleep(0.05)
    return False


def test_ctrl_c_twice_keeps_the_best_checkpoint_and_says_what_happens(tmp_path):
    import signal
    import subprocess
    import sys

    noisy, _ = tiny_movie(n=400, h=48, w=48)
    np.save(tmp_path / "m.npy", noisy)
    out = tmp_path / "m.pt"
    proc = subprocess.Popen(
        [sys.executable, "-m", "livedenoise", "train", str(tmp_path / "m.npy"), "--out", str(out), "--steps", "100000",
         "--crop", "16", "--batch", "2", "--val-every", "2", "--val-fraction", "0.5", "--device", "cpu",
         "--threads", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err: list[str] = []
    reader = _read_lines(proc.stderr, err)
    try:
        # not a terminal: plain progress lines, no carriage returns
        assert _wait_for(err, "steps (", proc), "".join(err)
        proc.send_signal(signal.SIGINT)
        assert _wait_for(err, "interrupted at step", proc), "".join(err)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=300) == 0, "".join(err)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(10)
    text = "".join(err)
    assert "\r" not in text
    card, _ = load_model(out)  # the checkpoint was written whatever the second Ctrl-C interrupted
    assert card.training["interrupted"] is True
    assert "interrupted again" in text or card.training["selection"] is not None
