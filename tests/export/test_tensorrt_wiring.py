"""The TensorRT build/runtime code paths, run on CPU against stand-ins (tests/export/fake_tensorrt.py).

The stand-ins mimic the TensorRT 10 / pycuda calls and compute with
onnxruntime, so these tests check livedenoise's wiring -- buffers, copies,
batch chunking, sidecars, cache keys, refusals, the export CLI -- on every
machine. The real thing is tested by test_tensorrt.py on a GPU.
"""

import json

import numpy as np
import pytest

from livedenoise.cli import main
from livedenoise.errors import UserError
from livedenoise.export import parity
from livedenoise.export.engine import TorchEngine, open_engine, tensorrt_status
from livedenoise.export.onnx_export import export_onnx
from livedenoise.models.checkpoint import load_model
from tests.export import fake_tensorrt
from tests.export.checkpoints import make_checkpoint


@pytest.fixture
def fake(monkeypatch):
    fake_tensorrt.install(monkeypatch)


@pytest.fixture(scope="module")
def lite(tmp_path_factory):
    d = tmp_path_factory.mktemp("trtfake")
    ckpt = make_checkpoint(d / "lite.pt", pre=4, post=1)
    onnx_path, card = export_onnx(ckpt, d / "lite.onnx", frame_shape=(24, 32))
    ref_card, net = load_model(ckpt)
    return d, ckpt, onnx_path, card, TorchEngine(ref_card, net)


def test_status_sees_the_fake_gpu(fake):
    ok, why = tensorrt_status()
    assert ok and fake_tensorrt.GPU_NAME in why and fake_tensorrt.VERSION in why


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_build_sidecar_and_run(fake, lite, tmp_path, precision):
    from livedenoise.export.tensorrt_build import build_engine, read_sidecar
    from livedenoise.export.tensorrt_engine import TensorRTEngine

    d, ckpt, onnx_path, card, ref = lite
    path = tmp_path / "m.engine"
    sc = build_engine(onnx_path, path, precision=precision, max_batch=4, source=str(ckpt))
    assert read_sidecar(path) == sc
    assert sc["gpu_name"] == fake_tensorrt.GPU_NAME and sc["compute_capability"] == "9.0"
    assert sc["tensorrt_version"] == fake_tensorrt.VERSION and sc["precision"] == precision
    assert sc["profile"] == {"min": 1, "opt": 4, "max": 4} and sc["input_shape"] == [5, 24, 32]
    assert sc["card"]["frame_shape"] == [24, 32]
    blob = json.loads(path.read_bytes())
    assert ("TF32" in blob["flags"]) == (precision != "fp32")  # fp32 means true fp32
    assert ("FP16" in blob["flags"]) == (precision == "fp16")

    with TensorRTEngine(path, reason="test") as e:
        assert e.max_batch == 4 and e.input_shape == (5, 24, 32) and e.precision == precision
        assert "tensorrt" in e.describe() and fake_tensorrt.GPU_NAME in e.describe()
        w, _ = parity.movie_windows(card, (24, 32), None, n=7)
        got = e.run(w)  # 7 windows: chunks of 4 and 3
        _, max_rel, _ = parity.compare(ref.run(w), got)
        assert max_rel <= (1e-4 if precision == "fp32" else 1e-2)
        out = np.empty((7, 24, 32), np.float32)
        assert e.run(w, out=out) is out and np.array_equal(out, got)  # second pass: graph replays
        assert type(e._driver).launched >= 2 and "CUDA graphs on" in e.describe()
        with pytest.raises(UserError, match="built for 24x32"):
            e.run(np.zeros((1, 5, 24, 24), np.float32))


def test_foreign_engine_is_refused(fake, lite, tmp_path):
    from livedenoise.export.tensorrt_build import build_engine, sidecar_path

    d, ckpt, onnx_path, card, ref = lite
    path = tmp_path / "m.engine"
    build_engine(onnx_path, path, precision="fp16", max_batch=2, source=str(ckpt))
    sc = json.loads(sidecar_path(path).read_text())
    sc["gpu_name"], sc["compute_capability"] = "NVIDIA A100-SXM4-40GB", "8.0"
    sidecar_path(path).write_text(json.dumps(sc))
    with pytest.raises(UserError) as info:
        open_engine(path)
    msg = str(info.value)
    assert "NVIDIA A100-SXM4-40GB" in msg and fake_tensorrt.GPU_NAME in msg
    assert f"livedenoise export {onnx_path.resolve()} --tensorrt {path} --precision fp16 --max-batch 2" in msg


def test_auto_caches_the_engine_next_to_the_onnx(fake, lite, tmp_path):
    import shutil

    d, ckpt, onnx_path, card, ref = lite
    local = tmp_path / "lite.onnx"
    shutil.copy(onnx_path, local)
    e = open_engine(local)
    assert e.backend == "tensorrt" and "cached fp32 engine" in e.reason
    (cached,) = tmp_path.glob("lite.*.engine")
    assert cached.name == f"lite.fake-gpu-9000-sm90.trt{fake_tensorrt.VERSION}.fp32.engine"
    mtime = cached.stat().st_mtime_ns
    e.close()
    e16 = open_engine(local, "tensorrt", precision="fp16")
    assert e16.precision == "fp16" and len(list(tmp_path.glob("lite.*.engine"))) == 2
    e16.close()
    open_engine(local, "tensorrt").close()
    assert cached.stat().st_mtime_ns == mtime  # reused, not rebuilt
    with pytest.raises(UserError, match="on-the-fly engines are fp32 or fp16"):
        open_engine(local, "tensorrt", precision="int8")


def test_export_cli_fp16_and_int8(fake, lite, tmp_path, capsys):
    d, ckpt, onnx_path, card, ref = lite
    rc = main(["export", str(ckpt), "--onnx", str(tmp_path / "m.onnx"), "--tensorrt", str(tmp_path / "m.engine"),
               "--precision", "fp16", "--max-batch", "4", "--frame-shape", "24", "32", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert rc == 0 and data["ok"]
    assert [r["target"] for r in data["parity"]] == ["onnx", "tensorrt"]
    assert data["parity"][1]["limit"] == 1e-2 and data["tensorrt"]["precision"] == "fp16"

    np.save(tmp_path / "cal.npy", parity.simulated_movie(40, (24, 32), seed=3))
    rc = main(["export", str(tmp_path / "m.onnx"), "--tensorrt", str(tmp_path / "i8.engine"), "--precision", "int8",
               "--calibrate", str(tmp_path / "cal.npy"), "--calibrate-windows", "8", "--max-batch", "4"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "tensorrt" in out and "int8" in out
    sc = json.loads((tmp_path / "i8.engine.json").read_text())
    assert "IInt8EntropyCalibrator2 on 8 windows" in sc["calibration"] and "cal.npy" in sc["calibration"]
    assert json.loads((tmp_path / "i8.engine").read_bytes())["calibrated"] == 8
    assert (tmp_path / "i8.engine.calib").read_bytes() == b"fake-calibration"


def test_failed_engine_parity_removes_the_engine(fake, lite, tmp_path, capsys):
    d, ckpt, onnx_path, card, ref = lite
    rc = main(["export", str(ckpt), "--onnx", str(tmp_path / "m.onnx"), "--tensorrt", str(tmp_path / "m.engine"),
               "--precision", "fp16", "--tolerance", "1e-9", "--frame-shape", "24", "32"])
    cap = capsys.readouterr()
    assert rc == 2 and "tensorrt fp16" in cap.err and "FAIL" in cap.out
    assert not (tmp_path / "m.engine").exists() and not (tmp_path / "m.engine.json").exists()
    assert (tmp_path / "m.onnx").exists()  # the ONNX passed its own check


def test_bench_engine_includes_tensorrt_precisions(fake, tmp_path, capsys):
    rc = main(["bench", "engine", "--model", "lite", "--frame-shape", "16", "16", "--batch", "1", "2",
               "--backends", "tensorrt", "--precisions", "fp32", "fp16", "--repeats", "2", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert {(r["backend"], r["precision"], r["batch"]) for r in data["results"]} == {
        ("tensorrt", p, b) for p in ("fp32", "fp16") for b in (1, 2)
    }
    assert all(r["device"] == fake_tensorrt.GPU_NAME for r in data["results"])
