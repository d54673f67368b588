import numpy as np
import pytest
import torch

from livedenoise.models.nets import cad3d
from livedenoise.models.card import ModelCard
from livedenoise.models.checkpoint import load_model, save_checkpoint
from livedenoise.models.registry import describe_receptive_field


def card(pre=8, post=1, omission=0):
    return ModelCard("cad3d", cad3d.preset_params("rt"), "2p", pre, post, omission,
                     list(cad3d.offsets(pre, post, omission)))


def test_rt_preset_has_about_1_02_million_parameters():
    net = cad3d.build(card())
    n = sum(p.numel() for p in net.parameters())
    print(f"cad3d rt parameters: {n:,}")
    assert n == 1_020_337
    assert abs(n - 1.02e6) < 0.01e6


@pytest.mark.parametrize("pre,post,omission,expected,read", [
    (8, 0, 0, (-7, -5, -3, -1), 3),          # causal: read the last position
    (8, 1, 0, (-7, -5, -3, -1, 1), 3),       # short lag: the one before last
    (8, 3, 0, (-7, -5, -3, -1, 1, 3), 3),
    (8, 2, 0, (-7, -5, -3, -1, 1), 3),       # only odd offsets: lag 1
    (4, 1, 1, (-2, 2), 0),                   # omission 1: stride 4, read at -2
    (1, 0, 0, (-1,), 0),
])
def test_window_is_odd_offsets_and_reads_minus_one(pre, post, omission, expected, read):
    c = card(pre, post, omission)
    assert tuple(c.offsets) == expected
    assert c.lag == max(0, max(expected))
    assert 0 not in c.offsets
    assert all(abs(o) > omission for o in c.offsets)
    assert cad3d.build(c).read_index == read


def test_pre_must_be_at_least_one():
    with pytest.raises(ValueError):
        cad3d.window(0, 1, 0)


def test_shapes_any_frame_size_and_all_positions():
    torch.manual_seed(0)
    c = card(6, 1)
    net = cad3d.build(c).eval()
    x = torch.randn(2, c.n_inputs, 20, 27)
    with torch.no_grad():
        y = net(x)
        ya = net.forward_all(x)
    assert y.shape == (2, 1, 20, 27)
    assert ya.shape == (2, 1, c.n_inputs, 20, 27)
    assert torch.equal(y, ya[:, :, net.read_index])


def test_tiled_forward_equals_untiled_away_from_borders():
    torch.manual_seed(0)
    c = card(4, 1)
    net = cad3d.build(c).eval()
    x = torch.randn(1, c.n_inputs, 72, 80)
    with torch.no_grad():
        full = net(x)
        tiled = cad3d.tiled_forward(net, x, tile=48, overlap=24)
    assert tiled.shape == full.shape
    m = 16
    # centres kept with a 12-px margin: close (the next test covers the whole receptive field: exact)
    assert torch.allclose(tiled[..., m:-m, m:-m], full[..., m:-m, m:-m], atol=1e-2)


def test_tiled_forward_with_full_receptive_field_overlap_is_exact():
    torch.manual_seed(1)
    c = card(2, 1)
    net = cad3d.build(c).eval()
    rf = net.spatial_receptive_field()
    tile = 8 * ((rf + 8) // 8) + 48  # keeps a centre of >= 48 px
    x = torch.randn(1, c.n_inputs, tile + 40, 40)
    with torch.no_grad():
        full = net(x)
        tiled = cad3d.tiled_forward(net, x, tile=tile, overlap=rf)
    assert torch.allclose(tiled, full, atol=1e-5)


def test_checkpoint_round_trip(tmp_path):
    c = card(4, 0)
    net = cad3d.build(c)
    save_checkpoint(tmp_path / "m.pt", c, net.state_dict())
    c2, net2 = load_model(tmp_path / "m.pt")
    assert c2 == c
    x = torch.randn(1, c.n_inputs, 16, 16)
    with torch.no_grad():
        assert torch.equal(net.eval()(x), net2(x))


def test_receptive_field_reports_span_and_lag():
    rf = describe_receptive_field(card(8, 3))
    assert rf["temporal_span"] == [-7, 3]
    assert rf["lag"] == 3
    assert rf["spatial"][0] > 50
    assert rf["uses_target"] is False


def test_exports_to_onnx(tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    c = card(4, 1)
    net = cad3d.build(c).eval()
    x = torch.randn(1, c.n_inputs, 24, 24)
    path = tmp_path / "m.onnx"
    try:
        torch.onnx.export(net, (x,), str(path), input_names=["x"], output_names=["y"], opset_version=17, dynamo=False)
    except TypeError:
        torch.onnx.export(net, (x,), str(path), input_names=["x"], output_names=["y"], opset_version=17)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    y = sess.run(None, {"x": x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(y, net(x).numpy(), atol=1e-4)
