"""open_engine: backends, what `auto` picks and why, and the one-line refusals."""

import numpy as np
import onnx
import pytest
import torch

from livedenoise.errors import UserError
from livedenoise.export.engines import DeferredExportEngine, open_engine
from livedenoise.export.engines.onnxruntime import OnnxRuntimeEngine, ort_providers_available
from livedenoise.export.engines.tensorrt import tensorrt_status, tensorrt_version_problem
from livedenoise.export.engines.torch import TorchEngine
from livedenoise.export.onnx_export import export_onnx
from tests.export.checkpoints import make_checkpoint

TRT_OK, TRT_WHY = tensorrt_status()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("engine")
    ckpt = make_checkpoint(d / "lite.pt", pre=4, post=1)
    onnx_path, _ = export_onnx(ckpt, d / "lite.onnx", frame_shape=(32, 48))
    return ckpt, onnx_path


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LIVEDENOISE_CACHE", str(tmp_path / "cache"))


def windows(n=3, c=5, h=32, w=48, seed=0):
    return np.random.default_rng(seed).standard_normal((n, c, h, w), dtype=np.float32)


def test_auto_on_a_checkpoint_is_torch_and_says_why(files):
    e = open_engine(files[0])
    assert isinstance(e, TorchEngine)
    assert "PyTorch" in e.reason and ("CPU" in e.reason or "CUDA" in e.reason)
    assert "picked:" in e.describe()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU: auto runs a .pt in PyTorch on it")
def test_auto_on_a_cpu_runs_a_checkpoint_where_its_architecture_declares_it_faster(tmp_path):
    from livedenoise.io.probe_geometry import np1_positions
    from livedenoise.models import registry
    from livedenoise.models.checkpoint import save_checkpoint

    card = registry.make_card("site-ephys", n_channels=8, positions=np1_positions(8))
    save_checkpoint(tmp_path / "site.pt", card, registry.build_network(card).state_dict())
    e = open_engine(tmp_path / "site.pt")
    assert registry.info("site-ephys").cpu_backend == "onnxruntime"
    assert isinstance(e, DeferredExportEngine) and e.backend == "onnxruntime"
    assert "faster in onnxruntime" in e.reason
    e.run(np.zeros((1, 1, 8, 200), np.float32))  # exported at the first block's size
    assert isinstance(e._inner, OnnxRuntimeEngine) and "faster in onnxruntime" in e.describe()
    lite = make_checkpoint(tmp_path / "lite.pt", pre=4, post=1)  # an architecture that declares torch
    assert isinstance(open_engine(lite), TorchEngine)


@pytest.mark.parametrize("bad", [{"cpu_backend": "tensorflow"}, {"tile": 0}, {"tile": 6.5}])
def test_an_architecture_declares_only_a_known_cpu_backend_and_a_positive_tile(bad):
    from livedenoise.models.registry import Arch

    with pytest.raises(ValueError, match=next(iter(bad))):
        Arch(name="x", modality="ephys", trainer="ephys", presets={"a": {}},
             defaults={"pre": 1, "post": 1, "omission": 0, "preset": "a"}, **bad)


@pytest.mark.parametrize("arch", ["block-ephys", "site-ephys"])
def test_onnxruntime_tiles_of_a_block_model_equal_one_pass(arch, tmp_path):
    from livedenoise.io.probe_geometry import np1_positions
    from livedenoise.models import registry
    from livedenoise.models.checkpoint import save_checkpoint

    card = registry.make_card(arch, n_channels=8, positions=np1_positions(8)) if arch == "site-ephys" else \
        registry.make_card(arch, n_channels=8)
    torch.manual_seed(0)
    net = registry.build_network(card)
    for p in net.parameters():  # weights far from zero: every input shows in the output
        p.data.normal_(0.0, 0.5)
    save_checkpoint(tmp_path / "m.pt", card, net.state_dict())
    export_onnx(tmp_path / "m.pt", tmp_path / "m.onnx", frame_shape=(8, 600))
    eng = open_engine(tmp_path / "m.onnx", "onnxruntime", threads=1)
    tile, ctx = eng._tile
    assert tile == registry.info(arch).tile and ctx == card.params["ctx_before"] + card.params["ctx_after"]
    x = np.random.default_rng(0).standard_normal((1, 1, 8, ctx + 5 * tile + 7)).astype(np.float32)  # a partial tile
    tiled = eng.run(x)
    eng._tile = None
    one = eng.run(x)
    assert tiled.shape == one.shape == (1, 8, 5 * tile + 7)
    np.testing.assert_allclose(tiled, one, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(TRT_OK, reason="this machine has TensorRT: auto picks it")
def test_auto_on_onnx_without_tensorrt_is_onnxruntime_and_says_why(files):
    e = open_engine(files[1])
    assert isinstance(e, OnnxRuntimeEngine)
    assert e.backend.startswith("onnxruntime")
    assert TRT_WHY in e.reason
    assert "onnxruntime" in e.describe() and TRT_WHY in e.describe()


def test_onnxruntime_equals_torch_and_writes_into_out(files):
    t = open_engine(files[0], "torch")
    o = open_engine(files[1], "onnxruntime")
    assert o.provider == "CPUExecutionProvider" and o.threads >= 1
    x = windows()
    ref = t.run(x)
    out = np.full((3, 32, 48), np.nan, np.float32)
    got = o.run(x, out=out)
    assert got is out
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()
    # a fresh array each call without `out` (callers may keep results)
    a, b = o.run(x), o.run(x)
    assert a is not b and np.array_equal(a, b)


def test_threads_option(files):
    o = open_engine(files[1], "onnxruntime", threads=1)
    assert o.threads == 1 and "1 threads" in o.describe()


def test_checkpoint_on_onnxruntime_exports_once_into_the_cache(files, tmp_path):
    e = open_engine(files[0], "onnxruntime", frame_shape=(32, 48))
    assert isinstance(e, OnnxRuntimeEngine) and "exported to" in e.reason
    cached = list((tmp_path / "cache" / "onnx").glob("*.onnx"))
    assert len(cached) == 1
    mtime = cached[0].stat().st_mtime_ns
    open_engine(files[0], "onnxruntime", frame_shape=(32, 48))
    assert cached[0].stat().st_mtime_ns == mtime
    ref = open_engine(files[0], "torch").run(windows())
    assert np.abs(e.run(windows()) - ref).max() <= 1e-4 * np.abs(ref).max()


def test_checkpoint_without_frame_size_exports_at_the_first_batch(files):
    e = open_engine(files[0], "onnxruntime")
    assert isinstance(e, DeferredExportEngine) and "not exported yet" in e.describe()
    e.warmup()  # no export at a made-up size
    y = e.run(windows(2, h=24, w=20))
    assert y.shape == (2, 24, 20)
    assert e.input_shape == (5, 24, 20) and "onnxruntime" in e.describe()
    with pytest.raises(UserError, match="built for 24x20 frames"):
        e.run(windows(1))


def test_wrong_frame_shape_is_refused(files):
    o = open_engine(files[1], "onnxruntime")
    with pytest.raises(UserError, match=r"built for 32x48 frames.*got 32x32"):
        o.run(windows(1, w=32))
    with pytest.raises(UserError, match="built for 32x48"):
        o.run(windows(1, c=7))


def test_onnx_without_card_is_refused(files, tmp_path):
    m = onnx.load(str(files[1]))
    del m.metadata_props[:]
    onnx.save(m, str(tmp_path / "bare.onnx"))
    with pytest.raises(UserError, match="without a livedenoise model card"):
        open_engine(tmp_path / "bare.onnx", "onnxruntime")


def test_garbage_onnx_is_refused(tmp_path):
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(UserError, match="not a loadable ONNX model"):
        open_engine(tmp_path / "junk.onnx", "onnxruntime")


def test_foreign_checkpoint_is_refused(tmp_path):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="not a livedenoise checkpoint"):
        open_engine(tmp_path / "other.pt")


def test_bad_names_and_combinations(files, tmp_path):
    with pytest.raises(UserError, match="unknown backend"):
        open_engine(files[0], "jax")
    with pytest.raises(UserError, match="does not exist"):
        open_engine(tmp_path / "missing.onnx")
    with pytest.raises(UserError, match="unknown model format"):
        open_engine(tmp_path / "m.h5")
    with pytest.raises(UserError, match="needs the .pt checkpoint"):
        open_engine(files[1], "torch")


@pytest.mark.skipif(TRT_OK, reason="TensorRT is installed here")
def test_tensorrt_missing_names_the_extra(files, tmp_path):
    with pytest.raises(UserError, match=r"livedenoise\[tensorrt\]"):
        open_engine(files[1], "tensorrt")
    (tmp_path / "m.engine").write_bytes(b"\0")
    with pytest.raises(UserError, match=r"livedenoise\[tensorrt\]"):
        open_engine(tmp_path / "m.engine")
    with pytest.raises(UserError, match="runs only with --backend tensorrt"):
        open_engine(tmp_path / "m.engine", "onnxruntime")


def test_only_tensorrt_10_is_accepted_and_11_names_the_pin():
    assert tensorrt_version_problem("10.13.0.35") is None
    why = tensorrt_version_problem("11.4.0.106")
    assert "TensorRT 11.4.0.106 is installed" in why and "tensorrt>=10,<11" in why and "\n" not in why
    assert "8.6.1" in tensorrt_version_problem("8.6.1")
    assert "cannot read" in tensorrt_version_problem("dev")


def test_missing_cuda_provider_is_a_user_error(files):
    if "CUDAExecutionProvider" in ort_providers_available():
        pytest.skip("onnxruntime-gpu is installed here")
    with pytest.raises(UserError, match="no CUDAExecutionProvider"):
        open_engine(files[1], "onnxruntime-cuda")
