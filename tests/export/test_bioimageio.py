"""BioImage Model Zoo packages: contents, the card's normalisation as pre/postprocessing, bioimageio.core runs them."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
import yaml

from livedenoise.errors import UserError
from livedenoise.export.bioimageio import export_bioimageio
from livedenoise.models.checkpoint import read_checkpoint, save_checkpoint
from livedenoise.models.norm import sample_frames_norm
from livedenoise.models.registry import build_network, make_card
from tests.export.checkpoints import make_checkpoint


@pytest.fixture(scope="module")
def lite(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("bio") / "lite.pt", pre=4, post=1, mean=100.0, std=20.0)


def _read(pkg):
    with zipfile.ZipFile(pkg) as z:
        return {n: z.read(n) for n in z.namelist()}


def test_package_holds_both_weights_tests_cover_docs_and_the_card(lite, tmp_path):
    from bioimageio.core import test_model

    pkg = tmp_path / "lite.zip"
    rep = export_bioimageio(lite, pkg, frame_shape=(24, 40), authors=["A. Person"])
    assert rep["parity"]["onnx"] <= 1e-4 and rep["parity"]["torchscript"] <= 1e-4
    files = _read(pkg)
    rdf = yaml.safe_load(files["rdf.yaml"])
    assert rdf["license"] == "MIT" and rdf["authors"] == [{"name": "A. Person"}]
    assert set(rdf["weights"]) == {"torchscript", "onnx"} and rdf["weights"]["onnx"]["opset_version"] >= 17
    inp, out = rdf["inputs"][0], rdf["outputs"][0]
    assert inp["axes"][1]["channel_names"] == ["t-4", "t-3", "t-2", "t-1", "t+1"]
    assert [a.get("size") for a in inp["axes"][2:]] == [24, 40]
    pre = [p for p in inp["preprocessing"] if p["id"] == "fixed_zero_mean_unit_variance"][0]["kwargs"]
    post = [p for p in out["postprocessing"] if p["id"] == "scale_linear"][0]["kwargs"]
    assert pre == {"mean": 100.0, "std": 20.0} and post == {"gain": 20.0, "offset": 100.0}
    assert rdf["config"]["livedenoise"]["card"]["norm_mean"] == 100.0
    x = np.load(io.BytesIO(files["test_input.npy"]))
    y = np.load(io.BytesIO(files["test_output.npy"]))
    assert x.shape == (1, 5, 24, 40) and y.shape == (1, 1, 24, 40)
    assert 20 < x.mean() < 400  # raw units, not normalised ones
    from PIL import Image

    w, h = Image.open(io.BytesIO(files["cover.png"])).size
    assert w == 2 * h
    readme = files["README.md"].decode()
    assert "lag: 1 frame" in readme and "t-4" in readme
    summary = test_model(pkg)
    assert summary.status == "passed", summary.format()


def test_placeholder_statistics_come_from_the_movie(tmp_path):
    """An imported DeepInterpolation-like card: 30 + 30 frames (60 channel names fit the spec), no statistics."""
    card = make_card("interp2d", preset="lite", pre=30, post=30)
    card.origin = {"tool": "DeepInterpolation", "normalisation": "... the card's 0/1 are placeholders until ..."}
    ck = save_checkpoint(tmp_path / "imp.pt", card, build_network(card).state_dict())
    with pytest.raises(UserError, match="--check MOVIE"):
        export_bioimageio(ck, tmp_path / "a.zip", frame_shape=(16, 16), license="MIT")
    movie = (np.random.default_rng(0).poisson(50, (20, 16, 24))).astype(np.uint16)
    np.save(tmp_path / "m.npy", movie)
    rep = export_bioimageio(ck, tmp_path / "a.zip", movie=tmp_path / "m.npy", license="MIT")
    want = sample_frames_norm(len(movie), lambda i: movie[i : i + 1])
    assert rep["frame_shape"] == [16, 24] and rep["norm"]["mean"] == pytest.approx(want[0])
    assert rep["norm"]["std"] == pytest.approx(want[1]) and "m.npy" in rep["norm"]["from"]
    assert read_checkpoint(ck)[0].norm_std == 1.0  # the checkpoint itself is not changed
    rdf = yaml.safe_load(_read(tmp_path / "a.zip")["rdf.yaml"])
    assert len(rdf["inputs"][0]["axes"][1]["channel_names"]) == 60


def test_refusals_leave_no_file(lite, tmp_path):
    card = make_card("interp-ephys", n_channels=8)
    ck = save_checkpoint(tmp_path / "e.pt", card, build_network(card).state_dict())
    with pytest.raises(UserError, match="image"):
        export_bioimageio(ck, tmp_path / "e.zip")
    with pytest.raises(UserError, match="could not build|validation"):
        export_bioimageio(lite, tmp_path / "bad.zip", frame_shape=(16, 16), license="NOT A LICENSE")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.pt"]
