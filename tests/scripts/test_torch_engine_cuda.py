"""TorchEngine's fp16 and CUDA-graph options and `bench engine` on them (issue 14's GPU check).

The CPU tests check the refusals and the bench's configurations; the `gpu` ones
(run by scripts/gpu_check.sh on a GPU machine) check parity against fp32 eager.
"""

import json

import numpy as np
import pytest
import torch

from livedenoise.cli import main
from livedenoise.errors import UserError
from livedenoise.export import bench_engine
from livedenoise.export.engines.torch import TorchEngine
from livedenoise.models.checkpoint import load_model
from tests.export.checkpoints import make_checkpoint

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU for PyTorch")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("torch") / "lite.pt", pre=4, post=1)


def test_cpu_refuses_fp16_and_cuda_graphs_and_unknown_precisions(ckpt):
    card, net = load_model(ckpt)
    with pytest.raises(UserError, match="fp16 needs a CUDA device"):
        TorchEngine(card, net, "cpu", precision="fp16")
    with pytest.raises(UserError, match="CUDA graphs needs a CUDA device"):
        TorchEngine(card, net, "cpu", cuda_graph=True)
    with pytest.raises(UserError, match="int8"):
        TorchEngine(card, net, "cpu", precision="int8")
    e = TorchEngine.from_checkpoint(ckpt)
    assert e.precision == "fp32" and not e.cuda_graph and "cpu fp32:" in e.describe()
    x = np.random.default_rng(0).standard_normal((2, 5, 16, 16), dtype=np.float32)
    assert e.run(x).shape == (2, 16, 16)


def test_configs_add_fp16_and_graphs_only_on_cuda(monkeypatch, tmp_path):
    model = tmp_path / "m.pt"
    monkeypatch.setattr(bench_engine, "_torch_on_cuda", lambda: True)
    got = bench_engine._configs(model, ["torch", "onnxruntime"], ["fp32", "fp16"], cuda_graph=True)
    assert got == [("torch", "fp32"), ("torch", "fp16"), ("torch", "fp32+graph"), ("torch", "fp16+graph"), ("onnxruntime", "fp32")]
    assert bench_engine._configs(model, ["torch"], ["fp32", "fp16", "int8"]) == [("torch", "fp32"), ("torch", "fp16")]
    monkeypatch.setattr(bench_engine, "_torch_on_cuda", lambda: False)
    assert bench_engine._configs(model, ["torch"], ["fp32", "fp16"], cuda_graph=True) == [("torch", "fp32")]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only listing")
def test_bench_engine_on_cpu_lists_fp16_and_graphs_as_skipped(ckpt, capsys):
    rc = main(["bench", "engine", "--model", str(ckpt), "--frame-shape", "16", "16", "--batch", "1", "--backends", "torch",
               "--precisions", "fp32", "fp16", "--cuda-graph", "--repeats", "2", "--warmup", "0", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert [(r["precision"], r["cuda_graph"]) for r in data["results"]] == [("fp32", False)]
    assert any(s["backend"] == "torch fp16 CUDA graphs" and "need a CUDA GPU" in s["reason"] for s in data["skipped"])
    assert "--cuda-graph" in data["command"] and data["machine"]["cuda_device"] is None


@pytest.mark.gpu
@needs_cuda
def test_fp16_and_cuda_graphs_match_fp32_eager(ckpt):
    card, net = load_model(ckpt)
    ref = TorchEngine(card, net, "cuda")
    x = np.random.default_rng(1).standard_normal((3, 5, 64, 64), dtype=np.float32)
    want = ref.run(x)
    scale = float(np.abs(want).max())
    for precision, limit in (("fp32", 1e-3), ("fp16", 2e-2)):  # fp32 may run TF32 convolutions
        for graph in (False, True):
            e = TorchEngine.from_checkpoint(ckpt, "cuda", precision=precision, cuda_graph=graph)
            got = e.run(x)
            assert got.dtype == np.float32 and got.shape == want.shape
            assert float(np.abs(got - want).max()) <= limit * scale, (precision, graph)
            if graph:
                np.testing.assert_array_equal(e.run(x), got)  # replayed
                out = np.empty((1, 64, 64), np.float32)
                e.run(x[:1], out=out)  # a second batch shape: its own graph
                assert len(e._graphs) == 2
                np.testing.assert_allclose(out, got[:1], rtol=0, atol=limit * scale)
            e.close()


@pytest.mark.gpu
@needs_cuda
def test_bench_engine_times_fp16_and_graphs_on_cuda(ckpt, capsys):
    rc = main(["bench", "engine", "--model", str(ckpt), "--frame-shape", "64", "64", "--batch", "1", "4", "--backends", "torch",
               "--precisions", "fp32", "fp16", "--cuda-graph", "--repeats", "5", "--warmup", "1", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert rc == 0 and data["machine"]["cuda_device"]
    got = {(r["precision"], r["cuda_graph"], r["batch"]) for r in data["results"]}
    assert got == {(p, g, b) for p in ("fp32", "fp16") for g in (False, True) for b in (1, 4)}
    assert all(r["device"].startswith("cuda") and r["frames_per_s"] > 0 for r in data["results"])
