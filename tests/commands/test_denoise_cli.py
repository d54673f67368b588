import hashlib
import json
import subprocess
import sys

import h5py
import numpy as np
import pytest
import tifffile
import torch

from livedenoise.models.nets import interp2d
from livedenoise.models.card import ModelCard
from livedenoise.models.checkpoint import save_checkpoint
from livedenoise.io.readers import open_movie


def cli(*args):
    return subprocess.run([sys.executable, "-m", "livedenoise", *map(str, args)], capture_output=True, text=True, timeout=300)


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def one_line_error(r, *words):
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("livedenoise denoise: error: ")
    for w in words:
        assert w in lines[0], lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    card = ModelCard("interp2d", interp2d.preset_params("lite"), "2p", 3, 1, 0,
                     list(interp2d.window(3, 1, 0).offsets), norm_mean=100.0, norm_std=20.0)
    torch.manual_seed(0)
    save_checkpoint(d / "lite.pt", card, interp2d.build(card).state_dict())
    r = cli("simulate", d / "sim.tif", "--frames", 40, "--size", 32, 32, "--seed", 1)
    assert r.returncode == 0, r.stderr
    return d


def test_denoise_tiff_and_hdf5(files, tmp_path):
    src = files / "sim.tif"
    before = sha(src)
    r = cli("denoise", src, tmp_path / "out.tif", "--model", files / "lite.pt", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["frames"] == 40 and info["dtype"] == "int16" and info["frames_per_s"] > 0
    with open_movie(tmp_path / "out.tif") as m:
        assert m.shape == (40, 32, 32) and m.dtype == np.int16
    r = cli("denoise", src, tmp_path / "out.h5", "--model", files / "lite.pt", "--dtype", "float32", "--batch", 3, "-q")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("denoised 40 frames") and "frames/s" in r.stdout
    with h5py.File(tmp_path / "out.h5") as f:
        assert f["data"].shape == (40, 32, 32) and f["data"].dtype == np.float32
    assert sha(src) == before
    # repeat run: the same bytes
    r = cli("denoise", src, tmp_path / "again.tif", "--model", files / "lite.pt", "-q")
    assert r.returncode == 0
    with open_movie(tmp_path / "out.tif") as a, open_movie(tmp_path / "again.tif") as b:
        np.testing.assert_array_equal(a.read(0, 40), b.read(0, 40))


def test_innovation_changes_the_frames_and_is_reported(files, tmp_path):
    src = files / "sim.tif"
    plain, innov = tmp_path / "plain.h5", tmp_path / "innov.h5"
    assert cli("denoise", src, plain, "--model", files / "lite.pt", "--dtype", "float32", "-q").returncode == 0
    r = cli("denoise", src, innov, "--model", files / "lite.pt", "--dtype", "float32", "--innovation-k", 1, "--json")
    assert r.returncode == 0, r.stderr
    inno = json.loads(r.stdout)["innovation"]
    assert (inno["sigma_xy"], inno["k"]) == (3.0, 1.0)  # this card is untuned: default sigma
    with h5py.File(plain) as a, h5py.File(innov) as b:
        assert np.abs(a["data"][()] - b["data"][()]).max() > 1.0
        assert "innovation step sigma_xy=3 k=1" in str(b["data"].attrs.get("innovation", b.attrs.get("innovation")))
    r = cli("denoise", src, tmp_path / "x.h5", "--model", files / "lite.pt", "--innovation-k", -1)
    one_line_error(r, "k must be >= 0")


def test_hdf5_input_with_dataset(files, tmp_path):
    with open_movie(files / "sim.tif") as m:
        data = m.read(0, len(m))
    with h5py.File(tmp_path / "in.h5", "w") as f:
        f["a"] = data
        f["b"] = data[:10]
    r = cli("denoise", tmp_path / "in.h5", tmp_path / "o.tif", "--model", files / "lite.pt", "-q")
    one_line_error(r, "several 3D datasets", "--dataset")
    r = cli("denoise", tmp_path / "in.h5", tmp_path / "o.tif", "--model", files / "lite.pt", "--dataset", "zz", "-q")
    one_line_error(r, "no dataset 'zz'", "a 40x32x32", "b 10x32x32")
    r = cli("denoise", tmp_path / "in.h5", tmp_path / "o.tif", "--model", files / "lite.pt", "--dataset", "a", "-q")
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("ext", [".tif", ".h5"])
def test_truncated_input(files, tmp_path, ext):
    with open_movie(files / "sim.tif") as m:
        data = m.read(0, len(m))
    src = tmp_path / f"cut{ext}"
    if ext == ".tif":
        tifffile.imwrite(src, data)
    else:
        with h5py.File(src, "w") as f:
            f["data"] = data
    blob = src.read_bytes()
    src.write_bytes(blob[: len(blob) // 2])
    before = sha(src)
    r = cli("denoise", src, tmp_path / "out.tif", "--model", files / "lite.pt")
    one_line_error(r, "truncated")
    assert sha(src) == before
    assert not (tmp_path / "out.tif").exists()


def test_refuses_to_overwrite_input(files):
    src = files / "sim.tif"
    before = sha(src)
    r = cli("denoise", src, src, "--model", files / "lite.pt")
    one_line_error(r, "is the input file")
    assert sha(src) == before


def test_too_few_frames_and_size_mismatch(files, tmp_path):
    # the one length rule (registry.min_frames): interp2d needs 2 frames, cad3d pre 5 post 1 a sub-stack of 8
    np.save(tmp_path / "one.npy", np.zeros((1, 32, 32), np.int16))
    r = cli("denoise", tmp_path / "one.npy", tmp_path / "o.tif", "--model", files / "lite.pt")
    one_line_error(r, "has 1 frames", "interp2d model needs at least 2")
    from tests.stream.streamkit import make_checkpoint

    make_checkpoint(tmp_path / "cad.pt", pre=5, post=1, arch="cad3d")
    tifffile.imwrite(tmp_path / "six.tif", np.zeros((6, 32, 32), np.int16), photometric="minisblack")
    r = cli("denoise", tmp_path / "six.tif", tmp_path / "o.tif", "--model", tmp_path / "cad.pt")
    one_line_error(r, "six.tif has 6 frames", "cad3d model needs at least 8")
    card = ModelCard("interp2d", interp2d.preset_params("lite"), "2p", 3, 1, 0,
                     list(interp2d.window(3, 1, 0).offsets), frame_shape=[64, 64])
    save_checkpoint(tmp_path / "fixed.pt", card, interp2d.build(card).state_dict())
    r = cli("denoise", files / "sim.tif", tmp_path / "o.tif", "--model", tmp_path / "fixed.pt")
    one_line_error(r, "32x32", "64x64")
    assert not (tmp_path / "o.tif").exists()


def test_bad_model_and_paths(files, tmp_path):
    (tmp_path / "bad.pt").write_bytes((files / "lite.pt").read_bytes()[:1000])
    r = cli("denoise", files / "sim.tif", tmp_path / "o.tif", "--model", tmp_path / "bad.pt")
    one_line_error(r, "corrupt or truncated")
    r = cli("denoise", tmp_path / "nope.tif", tmp_path / "o.tif", "--model", files / "lite.pt")
    one_line_error(r, "does not exist")
    r = cli("denoise", files / "sim.tif", tmp_path / "o.avi", "--model", files / "lite.pt")
    one_line_error(r, "unknown output format")
    r = cli("denoise", files / "sim.tif", tmp_path / "o.tif", "--model", files / "lite.pt", "--channel", "1")
    one_line_error(r, "ScanImage")
