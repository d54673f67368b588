"""TensorRT engines: build, parity (fp32, fp16), cache, refusal of foreign engines.

The tests marked `gpu` need an NVIDIA GPU, TensorRT 10 and pycuda
(`pip install 'livedenoise[tensorrt]'`); they skip with the reason otherwise.
The sidecar/compatibility logic is checked everywhere.
"""

import json

import numpy as np
import pytest

from livedenoise.cli import main
from livedenoise.errors import UserError
from livedenoise.export import parity
from livedenoise.export.engines import open_engine
from livedenoise.export.engines.tensorrt import (
    check_compatible,
    read_sidecar,
    rebuild_command,
    sidecar_path,
    tensorrt_status,
)
from livedenoise.export.engines.torch import TorchEngine
from livedenoise.export.onnx_export import export_onnx
from livedenoise.export.tensorrt_build import engine_cache_path
from livedenoise.models.checkpoint import load_model
from tests.export.checkpoints import make_checkpoint

TRT_OK, TRT_WHY = tensorrt_status()
needs_trt = pytest.mark.skipif(not TRT_OK, reason=f"TensorRT tests need an NVIDIA GPU, TensorRT and pycuda: {TRT_WHY}")

BUILT = {"gpu_name": "NVIDIA A100-SXM4-40GB", "compute_capability": "8.0", "tensorrt_version": "10.0.1",
         "precision": "fp16", "max_batch": 8, "onnx": "/nonexistent/m.onnx", "source": "m.pt"}


# --------------------------------------------------------------------------- everywhere


def test_same_gpu_and_version_is_accepted():
    check_compatible(BUILT, dict(BUILT), "m.engine")


@pytest.mark.parametrize("key,value", [("gpu_name", "NVIDIA H100 80GB HBM3"), ("compute_capability", "9.0"), ("tensorrt_version", "10.3.0")])
def test_other_gpu_or_version_is_refused_naming_both_and_the_rebuild(key, value):
    here = {**BUILT, key: value}
    with pytest.raises(UserError) as info:
        check_compatible(BUILT, here, "m.engine")
    msg = str(info.value)
    assert BUILT[key] in msg and value in msg
    assert "livedenoise export m.pt --tensorrt m.engine --precision fp16 --max-batch 8" in msg


def test_rebuild_command_prefers_the_onnx_when_it_exists(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"x")
    cmd = rebuild_command({**BUILT, "onnx": str(tmp_path / "m.onnx"), "precision": "int8"}, "out.engine")
    assert f"livedenoise export {tmp_path / 'm.onnx'} --tensorrt out.engine --precision int8" in cmd
    assert "--calibrate MOVIE" in cmd


def test_cache_name_is_keyed_by_gpu_version_and_precision(tmp_path):
    info = {"gpu_name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0", "tensorrt_version": "10.3.0"}
    p = engine_cache_path(tmp_path / "model.onnx", info, "fp16")
    assert p.parent == tmp_path
    assert p.name == "model.nvidia-h100-80gb-hbm3-sm90.trt10.3.0.fp16.engine"
    assert engine_cache_path(tmp_path / "model.onnx", info, "fp32") != p
    assert engine_cache_path(tmp_path / "model.onnx", {**info, "tensorrt_version": "10.4.0"}, "fp16") != p


def test_engine_without_sidecar_is_refused(tmp_path):
    (tmp_path / "m.engine").write_bytes(b"\0")
    with pytest.raises(UserError, match="no sidecar"):
        read_sidecar(tmp_path / "m.engine")
    sidecar_path(tmp_path / "m.engine").write_text(json.dumps({"format": "other"}))
    with pytest.raises(UserError, match="not a livedenoise engine sidecar"):
        read_sidecar(tmp_path / "m.engine")


# --------------------------------------------------------------------------- on a GPU


@pytest.fixture(scope="module")
def lite(tmp_path_factory):
    d = tmp_path_factory.mktemp("trt")
    ckpt = make_checkpoint(d / "lite.pt", pre=4, post=1)
    onnx_path, card = export_onnx(ckpt, d / "lite.onnx", frame_shape=(64, 64))
    ref_card, net = load_model(ckpt)
    return d, ckpt, onnx_path, card, TorchEngine(ref_card, net)


def _parity(engine, ref, card, n=6):
    w, _ = parity.movie_windows(card, (64, 64), None, n=n)
    return parity.compare(ref.run(w), engine.run(w))


@pytest.mark.gpu
@needs_trt
@pytest.mark.parametrize("precision,limit", [("fp32", 1e-3), ("fp16", 1e-2)])
def test_engine_parity(lite, precision, limit):
    from livedenoise.export.tensorrt_build import build_engine
    from livedenoise.export.engines.tensorrt import TensorRTEngine

    d, ckpt, onnx_path, card, ref = lite
    path = d / f"lite.{precision}.engine"
    sc = build_engine(onnx_path, path, precision=precision, max_batch=4, source=str(ckpt))
    assert sc["precision"] == precision and sc["card"]["frame_shape"] == [64, 64]
    assert sc["gpu_name"] and sc["compute_capability"] and sc["tensorrt_version"]
    with TensorRTEngine(path) as e:
        assert e.max_batch == 4 and e.input_shape == (5, 64, 64)
        _, max_rel, _ = _parity(e, ref, card, n=6)  # 6 > max batch: runs in two chunks
        assert max_rel <= limit
        x = np.random.default_rng(1).standard_normal((3, 5, 64, 64), dtype=np.float32)
        first = e.run(x)
        again = e.run(x)  # replayed from the captured CUDA graph
        np.testing.assert_array_equal(first, again)
        with pytest.raises(UserError, match="built for 64x64"):
            e.run(np.zeros((1, 5, 32, 32), np.float32))


@pytest.mark.gpu
@needs_trt
def test_foreign_engine_is_refused(lite):
    from livedenoise.export.tensorrt_build import build_engine

    d, ckpt, onnx_path, card, ref = lite
    path = d / "foreign.engine"
    build_engine(onnx_path, path, precision="fp32", max_batch=2, source=str(ckpt))
    sc = json.loads(sidecar_path(path).read_text())
    real = sc["gpu_name"]
    sc["gpu_name"], sc["tensorrt_version"] = "NVIDIA Imaginary 9000", "10.0.0-old"
    sidecar_path(path).write_text(json.dumps(sc))
    with pytest.raises(UserError) as info:
        open_engine(path)
    msg = str(info.value)
    assert "NVIDIA Imaginary 9000" in msg and real in msg and "10.0.0-old" in msg and "livedenoise export" in msg


@pytest.mark.gpu
@needs_trt
def test_auto_builds_and_reuses_a_cached_engine_next_to_the_onnx(lite):
    d, ckpt, onnx_path, card, ref = lite
    e = open_engine(onnx_path)  # auto: GPU + TensorRT here
    assert e.backend == "tensorrt" and "TensorRT" in e.reason
    cached = sorted(d.glob("lite.*-sm*.trt*.fp32.engine"))
    assert len(cached) == 1 and sidecar_path(cached[0]).is_file()
    mtime = cached[0].stat().st_mtime_ns
    e.close()
    e2 = open_engine(onnx_path, "tensorrt")
    assert cached[0].stat().st_mtime_ns == mtime
    _, max_rel, _ = _parity(e2, ref, card, n=2)
    assert max_rel <= 1e-3
    e2.close()


@pytest.mark.gpu
@needs_trt
def test_export_cli_builds_fp16_engine_with_sidecar(lite, capsys):
    d, ckpt, onnx_path, card, ref = lite
    rc = main(["export", str(ckpt), "--onnx", str(d / "cli.onnx"), "--tensorrt", str(d / "cli.engine"),
               "--precision", "fp16", "--max-batch", "4", "--frame-shape", "64", "64", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["ok"]
    assert [r["target"] for r in out["parity"]] == ["onnx", "tensorrt"]
    sc = read_sidecar(d / "cli.engine")
    assert sc["precision"] == "fp16" and "FP16" in sc["build_flags"] and sc["profile"]["max"] == 4


@pytest.mark.gpu
@needs_trt
def test_int8_engine_builds_from_a_calibration_movie(lite, capsys):
    d, ckpt, onnx_path, card, ref = lite
    movie = parity.simulated_movie(60, (64, 64), seed=5)
    np.save(d / "cal.npy", movie)
    rc = main(["export", str(onnx_path), "--tensorrt", str(d / "i8.engine"), "--precision", "int8",
               "--calibrate", str(d / "cal.npy"), "--max-batch", "4", "--tolerance", "0.5", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0, out
    assert read_sidecar(d / "i8.engine")["calibration"]
