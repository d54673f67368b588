"""fMRI through the CLI, as real subprocesses: simulate a BIDS-named run, train fmri-blind on it, denoise it to
NIfTI (header, affine, TR kept), and the refusals (one line, exit 2)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest


def cli(*args):
    return subprocess.run([sys.executable, "-m", "livedenoise", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def one_line_error(r, verb, *words):
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"livedenoise {verb}: error: "), r.stderr
    for w in words:
        assert w in lines[0], lines[0]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("fmri")
    bold = d / "sub-01_task-motor_bold.nii.gz"
    r = cli("simulate", bold, "--volumes", 30, "--volume-size", 14, 16, 12, "--tr", 1.5, "--tsnr", 20, "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["tr"] == 1.5 and info["active_voxels"] > 0 and info["brain_voxels"] > 500
    return d, bold


def test_simulate_train_denoise_keeps_header_affine_and_tr(run):
    import nibabel as nib

    d, bold = run
    model = d / "fmri.pt"
    r = cli("train", bold, "--out", model, "--steps", 6, "--threads", 1, "--pre", 3, "--post", 1, "-q", "--json")
    assert r.returncode == 0, r.stderr
    card = json.loads(r.stdout.splitlines()[0])["card"]
    assert (card["arch"], card["modality"], card["layout"], card["post"]) == ("fmri-blind", "fmri", "volumes", 1)
    assert card["training"]["frame_shape"] == [14, 16, 12]
    out = d / "sub-01_task-motor_desc-denoised_bold.nii.gz"
    r = cli("denoise", bold, out, "--model", model, "--json", "--threads", 1)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["frames"] == 30 and rep["passthrough"] == 0 and rep["dtype"] == "float32"
    a, b = nib.load(bold), nib.load(out)
    assert b.shape == a.shape and b.header.get_zooms() == a.header.get_zooms() == (3.0, 3.0, 3.0, 1.5)
    assert b.header.get_xyzt_units() == ("mm", "sec")
    np.testing.assert_array_equal(b.affine, a.affine)
    den, raw = np.asarray(b.dataobj), np.asarray(a.dataobj)
    assert np.isfinite(den).all() and not np.array_equal(den, raw)
    assert not list(d.glob("*.partial*"))


def test_refusals_are_one_line(run):
    d, bold = run
    one_line_error(cli("train", bold, "--out", d / "x.pt", "--arch", "interp2d", "--steps", 1),
                   "train", "4D NIfTI", "fmri-blind")
    movie = d / "movie.npy"
    np.save(movie, np.zeros((10, 8, 8), np.int16))
    one_line_error(cli("train", movie, "--out", d / "y.pt", "--arch", "fmri-blind", "--steps", 1),
                   "train", "2D frames", "interp2d")
    one_line_error(cli("train", bold, movie, "--out", d / "z.pt", "--steps", 1), "train", "not the same kind")
    one_line_error(cli("denoise", bold, d / "den.nii.gz", "--model", d / "missing.pt", "--plane", 1),
                   "denoise", "--plane")
    assert not (d / "den.nii.gz").exists()
