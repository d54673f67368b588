"""`livedenoise tune-innovation`: a new checkpoint with tuned settings; the model given is never modified."""

import hashlib
import json
import subprocess
import sys

import pytest

from livedenoise.models.checkpoint import read_checkpoint
from tests.export.checkpoints import make_checkpoint


def cli(*args):
    return subprocess.run([sys.executable, "-m", "livedenoise", *map(str, args)], capture_output=True, text=True, timeout=300)


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("tune")
    make_checkpoint(d / "m.pt", pre=3, post=0)  # random weights, normalisation near the movie's
    r = cli("simulate", d / "sim.tif", "--frames", 60, "--size", 48, 48, "--seed", 1)
    assert r.returncode == 0, r.stderr
    return d


def test_tuned_copy_is_written_and_used_by_denoise(files, tmp_path):
    before = sha(files / "m.pt")
    r = cli("tune-innovation", files / "m.pt", files / "sim.tif", "--out", tmp_path / "tuned.pt", "--frames", 40, "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    card, _ = read_checkpoint(tmp_path / "tuned.pt")
    assert card.innovation == info["innovation"] and info["frames"] == 40
    assert info["loss_best"] < info["loss_prediction"]
    assert card.training["innovation_tuning"]["movie"] == "sim.tif"
    assert sha(files / "m.pt") == before and read_checkpoint(files / "m.pt")[0].innovation is None
    r = cli("denoise", files / "sim.tif", tmp_path / "out.h5", "--model", tmp_path / "tuned.pt", "--innovation", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["innovation"] == card.innovation


@pytest.mark.parametrize("args, words", [
    (["m.pt", "sim.tif", "--out", "m.pt"], ["is the model itself"]),
    (["m.onnx", "sim.tif", "--out", "x.pt"], ["tune the .pt checkpoint"]),
    (["m.pt", "sim.tif", "--out", "x.pt", "--frames", 1], ["--frames 1 is too few", "at least 2"]),
    (["m.pt", "missing.tif", "--out", "x.pt"], ["missing.tif"]),
])
def test_bad_input_is_one_line(files, args, words):
    r = cli("tune-innovation", *[files / a if str(a).endswith((".pt", ".tif", ".onnx")) else a for a in args])
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("livedenoise tune-innovation: error: "), r.stderr
    assert all(w in lines[0] for w in words), lines[0]
