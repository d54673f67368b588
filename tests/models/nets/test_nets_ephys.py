"""interp-ephys and block-ephys: layouts, the self-supervision rule by perturbation, streaming == offline."""

import dataclasses

import numpy as np
import pytest
import torch

from livedenoise.export.engines.torch import TorchEngine
from livedenoise.models.nets import block_ephys, interp_ephys
from livedenoise.stream.ephys import SamplePipeline
from livedenoise.stream.offline import denoise_array
from livedenoise.models.registry import arch_module, build_network
from livedenoise.models.window import WindowSpec

C = 8


class Eng:
    """The engine contract over a torch module (what export.engine.TorchEngine does)."""

    def __init__(self, card, seed=0):
        torch.manual_seed(seed)
        self.card = card
        self.net = build_network(card).eval()

    def run(self, x, out=None):
        with torch.inference_mode():
            return self.net(torch.from_numpy(np.ascontiguousarray(x, np.float32)))[:, 0].numpy()


def cards():
    return [
        interp_ephys.make_card(C, 4, 2, 1, "lite"),  # short-lag
        interp_ephys.make_card(C, 5, 0, 0, "lite", layout="dense"),  # causal
        block_ephys.make_card(C, 30, 30, 1, "fast"),  # DI's window
        block_ephys.make_card(C, 9, 3, 1, "fast"),  # short-lag
        block_ephys.make_card(C, 7, 0, 2, "fast"),  # causal
    ]


def test_registry_names_and_defaults():
    assert arch_module("interp-ephys") is interp_ephys and arch_module("block-ephys") is block_ephys
    card = interp_ephys.make_card(384)
    assert (card.pre, card.post, card.omission) == (30, 30, 1)
    assert card.window == WindowSpec.interp(30, 30, 1)
    assert card.lag == 31 and card.frame_shape == [384, 2] and card.layout == "checkerboard"
    assert interp_ephys.make_card(384, layout="dense").frame_shape == [192, 2]


def test_checkerboard_and_dense_layouts():
    x = np.arange(1, 7, dtype=np.float32)[None]  # one sample, 6 channels
    cb = interp_ephys.to_frames(x, "checkerboard")[0]
    assert cb.shape == (6, 2)
    assert list(cb[:, 0]) == [1, 0, 3, 0, 5, 0] and list(cb[:, 1]) == [0, 2, 0, 4, 0, 6]
    dn = interp_ephys.to_frames(x, "dense")[0]
    assert dn.tolist() == [[1, 2], [3, 4], [5, 6]]
    for lay in ("checkerboard", "dense"):
        assert np.array_equal(interp_ephys.from_frames(interp_ephys.to_frames(x, lay), 6, lay), x)
    assert interp_ephys.site_mask(5, "dense").sum() == 5 and interp_ephys.frame_shape(5, "dense") == (3, 2)


def test_di_network_shape_and_size():
    card = interp_ephys.make_card(384, preset="di")
    net = build_network(card)
    n = sum(p.numel() for p in net.parameters())
    assert 10e6 < n < 20e6  # DI's unet_single_ephys_1024 scale
    y = build_network(interp_ephys.make_card(C, 30, 30, 1, "lite"))(torch.zeros(2, 60, 37, 2))  # any channel count
    assert y.shape == (2, 1, 37, 2)


@pytest.mark.parametrize("card", cards(), ids=lambda c: f"{c.arch}-{c.pre}-{c.post}-{c.omission}")
def test_output_never_sees_its_sample_the_omitted_band_or_beyond_post(card):
    eng = Eng(card)
    rng = np.random.default_rng(0)
    T = 160
    x = rng.standard_normal((T, C)).astype(np.float32)
    base = denoise_array(eng, x, chunk=37)
    t = 90
    allowed = set(card.offsets)
    lo, hi = -(card.pre + card.omission) - 3, card.lag + 4
    for dt in range(lo, hi):
        xp = x.copy()
        xp[t + dt] += 5.0
        y = denoise_array(eng, xp, chunk=37)
        changed = bool(np.abs(y[t] - base[t]).max() > 1e-6)
        assert changed == (dt in allowed), f"offset {dt}: changed={changed}, allowed={dt in allowed}"


@pytest.mark.parametrize("card", cards()[2:], ids=lambda c: f"{c.pre}-{c.post}-{c.omission}")
def test_block_network_dependencies_are_exactly_the_window(card):
    net = build_network(card).double().eval()
    before, after = card.params["ctx_before"], card.params["ctx_after"]
    T_out = 20
    x = torch.randn(1, 1, C, before + T_out + after, dtype=torch.float64, requires_grad=True)
    y = net(x)
    assert y.shape == (1, 1, C, T_out)
    j = 7
    y[0, 0, :, j].sum().backward()
    g = x.grad[0, 0].abs().sum(0).numpy()  # per input time
    t = j + before
    used = {int(i) - t for i in np.nonzero(g)[0]}
    assert used == set(card.offsets)


@pytest.mark.parametrize("card", cards(), ids=lambda c: f"{c.arch}-{c.pre}-{c.post}")
def test_streaming_in_any_pieces_equals_offline(card):
    eng = Eng(card, seed=1)
    x = np.random.default_rng(2).standard_normal((700, C)).astype(np.float32) * 20
    ref = denoise_array(eng, x, chunk=700)
    assert ref.shape == x.shape
    st = SamplePipeline(eng, C, max_block=64)
    outs, first_expected = [], 0
    rng = np.random.default_rng(3)
    a = 0
    while a < len(x):
        n = int(rng.integers(1, 90))
        sn, y = st.push(x[a:a + n])
        assert np.array_equal(sn, np.arange(first_expected, first_expected + len(y)))
        first_expected += len(y)
        outs.append(y)
        a += n
        assert st.pending == min(card.lag, a)  # output waits exactly `lag` samples
    outs.append(st.finish().data)
    np.testing.assert_allclose(np.concatenate(outs), ref, rtol=1e-5, atol=1e-5)


def test_block_example_input_and_dynamic_axes():
    card = block_ephys.make_card(384, 30, 30, 1, "fast")
    x = block_ephys.example_input(card, (384, 1024))
    assert tuple(x.shape) == (1, 1, 384, 1024)
    y = build_network(card)(x)
    assert tuple(y.shape) == (1, 1, 384, 1024 - card.params["ctx_before"] - card.params["ctx_after"])
    assert set(block_ephys.dynamic_axes()) == {"input", "output"}
    assert block_ephys.dilations(29) == [1, 2, 4, 8, 14] and sum(block_ephys.dilations(0)) == 0


@pytest.mark.parametrize("arch", ["block-ephys", "interp-ephys"])
def test_onnx_export_runs_in_onnxruntime_like_torch(arch, tmp_path, monkeypatch):
    monkeypatch.setenv("LIVEDENOISE_CACHE", str(tmp_path / "cache"))
    from livedenoise.export.engines import open_engine
    from livedenoise.models.checkpoint import save_checkpoint

    card = (block_ephys.make_card(C, 30, 30, 1, "fast") if arch == "block-ephys"
            else interp_ephys.make_card(C, 4, 2, 1, "lite"))
    torch.manual_seed(0)
    net = build_network(card)
    save_checkpoint(tmp_path / "m.pt", card, net.state_dict())
    x = np.random.default_rng(0).standard_normal((400, C)).astype(np.float32) * 10
    ref = denoise_array(open_engine(tmp_path / "m.pt", "torch"), x)
    if arch == "block-ephys":
        from livedenoise.export.onnx_export import export_onnx

        export_onnx(tmp_path / "m.pt", tmp_path / "m.onnx", frame_shape=(C, 512))
        ort = open_engine(tmp_path / "m.onnx", "onnxruntime")
    else:
        ort = open_engine(tmp_path / "m.pt", "onnxruntime")
    got = denoise_array(ort, x)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("card", [
    block_ephys.make_card(16, 9, 3, 1, "fast"),
    block_ephys.make_card(16, 9, 3, 1, "base"),
    interp_ephys.make_card(16, 4, 2, 1, "lite"),
    interp_ephys.make_card(16, 4, 2, 1, "lite", layout="dense"),
], ids=["block-fast", "block-base", "interp-checkerboard", "interp-dense"])
def test_edge_channels_are_denoised_like_inner_ones(card):
    torch.manual_seed(0)
    assert card.params["edge"] == "reflect"
    net = build_network(card).eval()
    for p in net.parameters():  # random weights far from zero: an edge rule that differs would show
        p.data.normal_(0.0, 0.3)
    rng = np.random.default_rng(0)
    signal = rng.standard_normal(400).astype(np.float32)
    data = np.repeat(signal[:, None], 16, axis=1)  # identical channels in ...
    out = denoise_array(TorchEngine(card, net, "cpu"), data)
    assert np.abs(out).max() > 0
    np.testing.assert_allclose(out, np.repeat(out[:, :1], 16, axis=1), rtol=1e-5, atol=1e-5)  # ... identical out
    # a card from before the rule (no "edge"): zeros past the first and last channels, as it was trained
    old = dataclasses.replace(card, params={k: v for k, v in card.params.items() if k != "edge"})
    net_old = build_network(old).eval()
    net_old.load_state_dict(net.state_dict())
    out_old = denoise_array(TorchEngine(old, net_old, "cpu"), data)
    assert not np.allclose(out_old[:, 0], out_old[:, 8], atol=1e-3)
