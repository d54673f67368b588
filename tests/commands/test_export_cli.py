"""`livedenoise export`: report, JSON, failure paths; denoise backends agree."""

import json

import numpy as np
import pytest

from livedenoise.cli import main
from livedenoise.export import parity
from livedenoise.export.engines.base import read_onnx_card
from livedenoise.export.engines.tensorrt import tensorrt_status
from tests.export.checkpoints import make_checkpoint

TRT_OK, TRT_WHY = tensorrt_status()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("cli") / "lite.pt", pre=4, post=1)


def test_export_prints_the_parity_table(ckpt, tmp_path, capsys):
    rc = main(["export", str(ckpt), "--onnx", str(tmp_path / "m.onnx"), "--frame-shape", "32", "48"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "parity against torch" in out and "max_rel" in out and "ok" in out and "simulated movie" in out
    assert read_onnx_card(tmp_path / "m.onnx").frame_shape == [32, 48]


def test_export_json_on_a_real_movie(ckpt, tmp_path, capsys):
    movie = parity.simulated_movie(30, (40, 56), seed=2)
    np.save(tmp_path / "mov.npy", movie)
    rc = main(["export", str(ckpt), "--onnx", str(tmp_path / "m.onnx"), "--check", str(tmp_path / "mov.npy"), "--json", "--windows", "3"])
    data = json.loads(capsys.readouterr().out)
    assert rc == 0 and data["ok"]
    assert data["frame_shape"] == [40, 56]  # taken from the --check movie: the card has none
    (row,) = data["parity"]
    assert row["target"] == "onnx" and row["windows"] == 3 and "mov.npy" in row["source"]
    assert row["max_rel"] <= 1e-4 and row["limit"] == 1e-4
    assert data["onnx"]["opset"] >= 17 and data["onnx"]["input"] == ["batch", 5, 40, 56]


def test_failed_parity_exits_2_and_removes_the_file(ckpt, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(parity, "ONNX_FP32_LIMIT", 0.0)
    monkeypatch.setattr(parity, "limit_for", lambda kind, precision, tolerance=None: -1.0)
    rc = main(["export", str(ckpt), "--onnx", str(tmp_path / "m.onnx"), "--frame-shape", "16", "16"])
    cap = capsys.readouterr()
    assert rc == 2
    assert "FAIL" in cap.out
    assert "failed the parity check" in cap.err and "removed" in cap.err
    assert len(cap.err.strip().splitlines()) == 1
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize(
    "argv,match",
    [
        (["--frame-shape", "16", "16"], "nothing to export"),
        (["--onnx", "X.onnx"], "pass --frame-shape"),
        (["--onnx", "X.onnx", "--opset", "12", "--frame-shape", "16", "16"], "opset must be >= 17"),
        (["--onnx", "X.onnx", "--precision", "int8", "--frame-shape", "16", "16"], "applies to TensorRT"),
    ],
)
def test_bad_arguments_are_one_line_exit_2(ckpt, tmp_path, capsys, argv, match):
    argv = [a.replace("X.onnx", str(tmp_path / "x.onnx")) for a in argv]
    rc = main(["export", str(ckpt), *argv])
    err = capsys.readouterr().err
    assert rc == 2 and match in err and len(err.strip().splitlines()) == 1


def test_not_our_files(tmp_path, capsys):
    import torch

    torch.save({"w": torch.zeros(2)}, tmp_path / "x.pt")
    assert main(["export", str(tmp_path / "x.pt"), "--onnx", str(tmp_path / "x.onnx"), "--frame-shape", "8", "8"]) == 2
    assert "not a livedenoise checkpoint" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "missing.pt"), "--onnx", str(tmp_path / "x.onnx")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.skipif(TRT_OK, reason="TensorRT is installed here")
def test_tensorrt_missing_is_one_line_naming_the_extra(ckpt, tmp_path, capsys):
    rc = main(["export", str(ckpt), "--onnx", str(tmp_path / "m.onnx"), "--tensorrt", str(tmp_path / "m.engine"), "--frame-shape", "16", "16"])
    err = capsys.readouterr().err
    assert rc == 2 and "livedenoise[tensorrt]" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "m.onnx").exists()  # refused before doing any work


@pytest.mark.parametrize("model", ["pt", "onnx"])
def test_denoise_onnxruntime_equals_torch(ckpt, tmp_path, capsys, monkeypatch, model):
    """`livedenoise denoise --backend onnxruntime` gives the frames `--backend torch` gives (1e-4 relative)."""
    h5py = pytest.importorskip("h5py")
    monkeypatch.setenv("LIVEDENOISE_CACHE", str(tmp_path / "cache"))
    movie = parity.simulated_movie(24, (40, 48), seed=4)
    np.save(tmp_path / "sim.npy", movie)
    src = str(ckpt)
    if model == "onnx":
        assert main(["export", src, "--onnx", str(tmp_path / "m.onnx"), "--frame-shape", "40", "48"]) == 0
        src = str(tmp_path / "m.onnx")
    outs = {}
    for backend, m in (("torch", str(ckpt)), ("onnxruntime", src)):
        out = tmp_path / f"{backend}.h5"
        rc = main(["denoise", str(tmp_path / "sim.npy"), str(out), "--model", m, "--backend", backend, "--dtype", "float32", "-q"])
        assert rc == 0, capsys.readouterr().err
        with h5py.File(out, "r") as f:
            outs[backend] = f["data"][()]
    ref, got = outs["torch"], outs["onnxruntime"]
    assert ref.shape == got.shape == movie.shape
    _, max_rel, _ = parity.compare(ref, got)
    assert max_rel <= 1e-4
