"""DeepCAD-RT .pth -> cad3d: the imported network gives DeepCAD-RT's own Network_3D_Unet output (1e-4 relative)."""

from __future__ import annotations

import pytest
import torch

from livedenoise.errors import UserError
from livedenoise.export.foreign import import_model
from livedenoise.export.foreign.deepcad import import_pth
from livedenoise.models.checkpoint import load_model, save_checkpoint
from tests.export.foreign.reference_nets import save_deepcad_pth

TOL = 1e-4
PARA = {"patch_x": 64, "patch_y": 64, "patch_t": 32, "overlap_factor": 0.25, "scale_factor": 2, "fmap": 16}


@pytest.fixture(scope="module")
def dc(tmp_path_factory):
    d = tmp_path_factory.mktemp("deepcad")
    ref = save_deepcad_pth(d / "E_10_Iter_0100.pth", seed=1, para=PARA)
    return d / "E_10_Iter_0100.pth", ref


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def test_import_matches_deepcads_network_at_every_position(dc, tmp_path):
    path, ref = dc
    imp = import_model(path)
    card = imp.card
    assert card.arch == "cad3d" and card.params == {"preset": "rt", "f_maps": [16, 32, 64, 128]}
    assert card.origin["tool"] == "DeepCAD-RT" and card.origin["patch"]["patch_t"] == 32
    assert card.origin["settings_file"] == "para.yaml"
    assert (card.norm_mean, card.norm_std) == (0.0, 2.0)  # raw / scale_factor, as DeepCAD-RT trains
    save_checkpoint(tmp_path / "m.pt", card, imp.state_dict)
    _, net = load_model(tmp_path / "m.pt")
    x = torch.randn(2, 1, 16, 32, 48, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = ref(x)
        got = net.forward_all(x)
    assert want.std() > 1e-3
    assert _rel(got, want) <= TOL
    # the per-frame engine contract: a window (B, T, H, W) -> the read position of the same output
    with torch.no_grad():
        win = torch.randn(1, card.n_inputs, 32, 32, generator=torch.Generator().manual_seed(1))
        pad_t = (-card.n_inputs) % 8  # DeepCAD-RT needs T a multiple of 8; cad3d pads by repeating the last frame
        full = torch.cat([win, win[:, -1:].expand(1, pad_t, 32, 32)], 1)[:, None]
        assert _rel(net(win)[:, 0], ref(full)[:, 0, net.read_index]) <= TOL


def test_parity_fails_with_a_wrong_mapping(dc):
    """The check can fail: swapping the two convolutions of one level breaks it."""
    path, ref = dc
    imp = import_pth(path)
    state = dict(imp.state_dict)
    state["decoders.0.0.bias"], state["decoders.0.2.bias"] = state["decoders.0.2.bias"], state["decoders.0.0.bias"]
    from livedenoise.models.registry import build_network

    net = build_network(imp.card)
    net.load_state_dict(state)
    x = torch.randn(1, 1, 8, 32, 32)
    with torch.no_grad():
        assert _rel(net.eval().forward_all(x), ref(x)) > 1e-3


def test_other_feature_maps_are_read_from_the_weights(tmp_path):
    ref = save_deepcad_pth(tmp_path / "w.pth", seed=2, f_maps=8)
    imp = import_pth(tmp_path / "w.pth", pre=6, post=0)
    assert imp.card.params["f_maps"] == [8, 16, 32, 64] and imp.card.lag == 0
    from livedenoise.models.registry import build_network

    net = build_network(imp.card)
    net.load_state_dict(imp.state_dict)
    x = torch.randn(1, 1, 8, 16, 16)
    with torch.no_grad():
        assert _rel(net.eval().forward_all(x), ref(x)) <= TOL
    assert any("para.yaml" in n for n in imp.notes)  # no settings file next to it: said, not guessed


def test_data_parallel_prefixes_are_accepted(dc, tmp_path):
    path, _ = dc
    state = torch.load(path, weights_only=True)
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "dp.pth")
    assert import_pth(tmp_path / "dp.pth").card.params["f_maps"] == [16, 32, 64, 128]


def test_foreign_state_dicts_are_refused(tmp_path):
    torch.save({"conv.weight": torch.zeros(3, 3)}, tmp_path / "other.pth")
    with pytest.raises(UserError, match="not a DeepCAD-RT Network_3D_Unet"):
        import_model(tmp_path / "other.pth")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(UserError, match="not a state dict"):
        import_model(tmp_path / "list.pth")


def test_a_livedenoise_checkpoint_is_not_imported(dc, tmp_path):
    imp = import_model(dc[0])
    save_checkpoint(tmp_path / "ours.pt", imp.card, imp.state_dict)
    with pytest.raises(UserError, match="already a livedenoise checkpoint"):
        import_model(tmp_path / "ours.pt")


def test_a_bad_settings_file_is_refused(dc, tmp_path):
    (tmp_path / "bad.yaml").write_text("patch_t: [1, 2]\n")
    with pytest.raises(UserError, match="patch_t should be a number"):
        import_pth(dc[0], para_path=tmp_path / "bad.yaml")
    (tmp_path / "fm.yaml").write_text("fmap: 32\n")
    with pytest.raises(UserError, match="fmap 32"):
        import_pth(dc[0], para_path=tmp_path / "fm.yaml")
