import numpy as np
import pytest
import torch

from livedenoise.models.nets import classic as baselines
from livedenoise.models.nets.classic import apply_filter, classic_card, tune
from livedenoise.models.checkpoint import load_model, save_checkpoint
from livedenoise.models.registry import build_network, describe_receptive_field


@pytest.mark.parametrize("kind,params", [
    ("exp", {"tau": 2.0}), ("boxcar", {}), ("halfgauss", {"sigma_t": 2.0}),
    ("gauss", {"sigma_t": 2.0}), ("spatial", {"sigma_xy": 1.5}),
])
@pytest.mark.parametrize("post", [0, 2])
def test_kernels_respect_the_lag_budget_and_sum_to_one(kind, params, post):
    card = classic_card(kind, pre=5, post=post, **params)
    assert max(card.offsets) <= post
    assert card.window.uses_target
    if kind in ("exp", "halfgauss", "spatial"):
        assert card.lag == 0
    else:
        assert card.lag == post
    net = build_network(card)
    w = net.weights.flatten()
    assert torch.isclose(w.sum(), torch.tensor(1.0))
    # a constant movie stays constant (the kernel sums to one, spatially too)
    x = torch.full((1, card.n_inputs, 12, 12), 7.0)
    assert torch.allclose(net(x), torch.full((1, 1, 12, 12), 7.0), atol=1e-5)


def test_exp_weights_decay_into_the_past_and_gauss_is_symmetric():
    e = baselines.temporal_weights("exp", range(-4, 1), tau=2.0)
    assert np.all(np.diff(e) > 0)
    g = baselines.temporal_weights("gauss", range(-3, 4), sigma_t=1.5)
    np.testing.assert_allclose(g, g[::-1], rtol=1e-6)


def test_weights_are_buffers_saved_in_the_state_dict(tmp_path):
    card = classic_card("gauss", pre=4, post=1, sigma_t=2.0, sigma_xy=1.0)
    net = build_network(card)
    sd = net.state_dict()
    assert "weights" in sd and "kernel_x" in sd
    assert not list(net.parameters())
    save_checkpoint(tmp_path / "c.pt", card, sd)
    card2, net2 = load_model(tmp_path / "c.pt")
    x = torch.randn(2, card.n_inputs, 10, 13)
    assert torch.equal(net(x), net2(x))


def test_classic_window_refuses_omission():
    with pytest.raises(ValueError):
        baselines.window(4, 1, 1)


def test_spatial_stage_of_tune_matches_the_module():
    rng = np.random.default_rng(0)
    movie = rng.poisson(3.0, (30, 16, 20)).astype(np.float32)
    card = classic_card("halfgauss", pre=6, sigma_t=2.0, sigma_xy=1.0)
    base = classic_card("halfgauss", pre=6, sigma_t=2.0, sigma_xy=0.0)
    frames = [0, 3, 10, 29]
    full = apply_filter(card, movie, frames)
    staged = baselines._spatial(apply_filter(base, movie, frames), 1.0)
    np.testing.assert_allclose(full, staged, atol=1e-4)


def test_tune_finds_averaging_beats_raw_and_respects_lag():
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:24, :24]
    blob = np.exp(-((yy - 12) ** 2 + (xx - 12) ** 2) / 30.0)
    truth = np.stack([4 + 6 * blob * (1 + np.sin(t / 15.0)) for t in range(80)]).astype(np.float32)
    movie = rng.poisson(truth).astype(np.float32)
    grid = {"exp": {"tau": [2.0, 6.0], "sigma_xy": [0.0, 1.0]}, "boxcar": {"pre": [4, 8], "sigma_xy": [0.0, 1.0]},
            "gauss": {"sigma_t": [2.0, 4.0], "sigma_xy": [1.0]}, "spatial": {"sigma_xy": [1.0, 2.0]}}
    raw = baselines._psnr(movie[20:60], truth[20:60])
    for post in (0, 2):
        card, score, results = tune(movie, truth, post=post, kinds=list(grid), grid=grid, pre=16, frames=range(20, 60))
        assert card.lag <= post
        assert score > raw + 3
        assert all(r[0]["post"] <= post for r in results)


def test_receptive_field_of_classic():
    rf = describe_receptive_field(classic_card("gauss", pre=6, post=1, sigma_t=2.0, sigma_xy=1.0))
    assert rf["temporal_span"] == [-6, 1] and rf["lag"] == 1 and rf["spatial"] == [7, 7] and rf["uses_target"]


def test_classic_filter_exports_to_onnx(tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    card = classic_card("gauss", pre=4, post=1, sigma_t=2.0, sigma_xy=1.0)
    net = build_network(card).eval()
    x = torch.randn(2, card.n_inputs, 20, 24)
    path = tmp_path / "c.onnx"
    try:
        torch.onnx.export(net, (x,), str(path), input_names=["x"], output_names=["y"], opset_version=17, dynamo=False)
    except TypeError:
        torch.onnx.export(net, (x,), str(path), input_names=["x"], output_names=["y"], opset_version=17)
    y = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(y, net(x).numpy(), atol=1e-5)
