import json
import subprocess
import sys

import numpy as np

from livedenoise.io.readers import open_movie
from livedenoise.sim.imaging import load_truth


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "livedenoise", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_simulate_writes_movie_and_truth(tmp_path):
    r = cli("simulate", tmp_path / "a.tif", "--frames", 60, "--size", 32, 40, "--neurons", 4,
            "--photons", 2.0, "--fps", 15, "--seed", 7, "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["frames"] == 60 and info["height"] == 32 and info["width"] == 40 and info["neurons"] == 4
    assert abs(info["mean_photons"] - 2.0) < 0.3
    assert 0 < info["truth_mb"] and 0 < info["movie_mb"]
    # progress off a terminal: plain lines (one per phase at the end, one every 5 s before), never \r redraws
    assert "\r" not in r.stderr
    assert "simulate: generating: 60/60 frames (100%)" in r.stderr
    assert "simulate: writing a.tif and its ground truth: 60/60 frames (100%)" in r.stderr
    with open_movie(tmp_path / "a.tif") as m:
        assert m.shape == (60, 32, 40) and m.dtype == np.int16
    truth = load_truth(tmp_path / "a.tif")
    assert truth.clean.shape == (60, 32, 40) and truth.masks.shape == (4, 32, 40)
    assert truth.config.frame_rate == 15 and truth.config.seed == 7

    # same seed: the same bytes; plain-text summary without --json
    r = cli("simulate", tmp_path / "b.tif", "--frames", 60, "--size", 32, 40, "--neurons", 4,
            "--photons", 2.0, "--fps", 15, "--seed", 7)
    assert r.returncode == 0 and r.stdout.startswith("wrote ")
    with open_movie(tmp_path / "a.tif") as a, open_movie(tmp_path / "b.tif") as b:
        np.testing.assert_array_equal(a.read(0, 60), b.read(0, 60))


def test_simulate_bad_input(tmp_path):
    r = cli("simulate", tmp_path / "a.avi", "--frames", 10, "--size", 16, 16)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "use a .tif, .h5 or .npy" in r.stderr
    r = cli("simulate", tmp_path / "a.tif", "--photons", 0)
    assert r.returncode == 2 and "photons" in r.stderr
    r = cli("simulate", tmp_path / "nofolder" / "a.tif", "--frames", 10, "--size", 16, 16)
    assert r.returncode == 2 and "does not exist" in r.stderr
