"""site-ephys: the per-site blind spot by perturbation, geometry neighbours, streaming == offline, export."""

import numpy as np
import pytest
import torch

from livedenoise.export.engines.torch import TorchEngine
from livedenoise.models import registry
from livedenoise.models.nets import site_ephys
from livedenoise.models.registry import build_network
from livedenoise.stream.ephys import SamplePipeline
from livedenoise.stream.offline import denoise_array

C = 12


def np1(n):
    """Neuropixels 1.0 site positions (µm) in channel order."""
    k = np.arange(n)
    return np.stack([np.array([43.0, 11.0, 59.0, 27.0])[k % 4], (k // 2) * 20.0], axis=1)


def cards():
    return [
        site_ephys.make_card(C, 30, 30, 1, "fast", positions=np1(C)),  # DI's own window
        site_ephys.make_card(C, 9, 3, 1, "base", positions=np1(C)),  # short lag: ctx_after 4 < nb_span 8
        site_ephys.make_card(C, 7, 0, 2, "fast", positions=np1(C)),  # causal: no lag
        site_ephys.make_card(C, 12, 12, 1, "blind", positions=np1(C)),  # the blind prediction as output
    ]


def _random_net(card, seed=0):
    torch.manual_seed(seed)
    net = build_network(card).double().eval()
    for p in net.parameters():  # weights far from zero: every allowed input shows in the output
        p.data.normal_(0.0, 0.5)
    return net


def test_registered_with_its_facts():
    assert "site-ephys" in registry.names(modality="ephys", trainer="ephys")
    card = cards()[0]
    assert card.layout == "block" and card.lag == 31
    assert card.params["ctx_before"] == 31 and card.params["ctx_after"] == 31
    assert cards()[2].lag == 0 and cards()[2].params["ctx_after"] == 0 and cards()[2].params["nb_after"] == 0
    assert registry.min_frames(card) == 63
    assert card.params["posterior"] and not cards()[3].params["posterior"]


def test_neighbours_are_the_nearest_other_sites_in_a_fixed_order():
    pos = np1(8)
    nb = site_ephys.neighbours(pos, 3)
    for c in range(8):
        assert c not in nb[c]
        d = np.hypot(*(pos - pos[c]).T)
        others = np.sort(d[np.arange(8) != c])
        np.testing.assert_allclose(np.sort(d[nb[c]]), others[:3])
    # a duplicate position (same site twice) is never a neighbour: it would carry the same noise
    dup = np.array([[0.0, 0.0], [0.0, 0.0], [0.0, 20.0]])
    assert site_ephys.neighbours(dup, 2).tolist() == [[2, -1], [2, -1], [0, 1]]
    with pytest.raises(ValueError):
        site_ephys.neighbours(np.zeros((3, 3)), 2)


@pytest.mark.parametrize("card", cards(), ids=lambda c: f"{c.params['preset']}-{c.pre}-{c.post}-{c.omission}")
@pytest.mark.parametrize("head", [0, 1])
def test_the_blind_head_of_a_site_never_sees_its_own_hidden_band_but_sees_its_neighbours_at_that_instant(card, head):
    """Gradient of the blind head (mean, and log variance for posterior models) at (site c, sample t)
    wrt every input: site c only at the card's offsets (never t, never the omission band, nothing
    past t + lag); the K neighbours of c at t - nb_before .. t + nb_after (t itself included); nothing else."""
    net = _random_net(card)
    p = card.params
    before, after = p["ctx_before"], p["ctx_after"]
    T_out = 12
    x = torch.randn(1, 1, C, before + T_out + after, dtype=torch.float64, requires_grad=True)
    y = net.prior(x)
    assert y.shape == (1, 2 if p["posterior"] else 1, C, T_out)
    if head >= y.shape[1]:
        pytest.skip("no variance head")
    j = 5
    t = j + before
    nbr = np.asarray(p["neighbours"])
    for c in (0, 5, C - 1):
        x.grad = None
        y[0, head, c, j].backward(retain_graph=True)
        g = x.grad[0, 0].abs().numpy()
        own = {int(i) - t for i in np.nonzero(g[c])[0]}
        assert own == set(card.offsets), f"site {c}"
        assert not any(abs(o) <= card.omission for o in own)
        nb_expected = set(range(-p["nb_before"], p["nb_after"] + 1))
        for s in range(C):
            if s == c:
                continue
            used = {int(i) - t for i in np.nonzero(g[s])[0]}
            if s in nbr[c]:
                assert used == nb_expected, f"neighbour {s} of {c}"
                assert 0 in used  # the same instant: the point of the per-site blind spot
            else:
                assert not used, f"site {s} is not a neighbour of {c}"


@pytest.mark.parametrize("card", cards(), ids=lambda c: f"{c.params['preset']}-{c.pre}-{c.post}")
def test_perturbing_a_site_at_t_changes_its_own_output_only_through_the_posterior(card):
    """Through the offline pipeline (edge rule, blocks): a change d of site c's sample t changes
    neighbours' outputs at t; site c's own output at t - omission .. t + omission does not change
    (a blind model), or, for a posterior model, at t only and by lambda * d with 0 < lambda < 1
    (lambda = v / (v + noise), the Bayes weight of the observation), never at t +- 1 .. omission."""
    net = _random_net(card).float()
    eng = TorchEngine(card, net, "cpu")
    x = np.random.default_rng(0).standard_normal((200, C)).astype(np.float32) * 10
    base = denoise_array(eng, x, chunk=53)
    t, c = 120, 4
    xp = x.copy()
    xp[t, c] += 50.0
    out = denoise_array(eng, xp, chunk=53)
    diff = np.abs(out - base) > 1e-5
    for dt in range(-card.omission, card.omission + 1):
        if dt == 0 and card.params["posterior"]:
            lam = (out[t, c] - base[t, c]) / 50.0
            assert 0.0 < lam < 1.0
        else:
            assert not diff[t + dt, c]
    nbr = card.params["neighbours"][c]
    assert any(diff[t, s] for s in nbr if s >= 0)
    assert not diff[:, [s for s in range(C) if s != c and s not in nbr and c not in card.params["neighbours"][s]]].any()


@pytest.mark.parametrize("card", cards(), ids=lambda c: f"{c.params['preset']}-{c.pre}-{c.post}")
def test_streaming_in_any_pieces_equals_offline(card):
    eng = TorchEngine(card, _random_net(card, 1).float(), "cpu")
    x = np.random.default_rng(2).standard_normal((500, C)).astype(np.float32) * 20
    ref = denoise_array(eng, x, chunk=500)
    st = SamplePipeline(eng, C, max_block=64)
    outs, rng, a = [], np.random.default_rng(3), 0
    while a < len(x):
        n = int(rng.integers(1, 90))
        outs.append(st.push(x[a:a + n]).data)
        a += n
        assert st.pending == min(card.lag, a)
    outs.append(st.finish().data)
    np.testing.assert_allclose(np.concatenate(outs), ref, rtol=1e-4, atol=1e-4)


def test_another_channel_count_is_refused_naming_the_geometry():
    card = cards()[0]
    eng = TorchEngine(card, build_network(card).eval(), "cpu")
    from livedenoise.errors import UserError

    with pytest.raises(UserError, match="12 channels"):
        SamplePipeline(eng, C + 1)


def test_a_card_needs_positions_for_every_channel():
    with pytest.raises(ValueError, match="geometry"):
        site_ephys.make_card(C)
    with pytest.raises(ValueError, match="positions"):
        site_ephys.make_card(C, positions=np1(C - 1))


def test_onnx_export_runs_in_onnxruntime_like_torch(tmp_path, monkeypatch):
    monkeypatch.setenv("LIVEDENOISE_CACHE", str(tmp_path / "cache"))
    from livedenoise.export.engines import open_engine
    from livedenoise.export.onnx_export import export_onnx
    from livedenoise.models.checkpoint import save_checkpoint

    card = cards()[1]
    net = _random_net(card).float()
    save_checkpoint(tmp_path / "m.pt", card, net.state_dict())
    x = np.random.default_rng(0).standard_normal((400, C)).astype(np.float32) * 10
    ref = denoise_array(open_engine(tmp_path / "m.pt", "torch"), x)
    export_onnx(tmp_path / "m.pt", tmp_path / "m.onnx", frame_shape=(C, 512))
    got = denoise_array(open_engine(tmp_path / "m.onnx", "onnxruntime"), x)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("card", cards(), ids=lambda c: f"{c.params['preset']}-{c.pre}-{c.post}")
def test_tiled_passes_equal_one_pass(card):
    net = _random_net(card).float()
    p = card.params
    x = torch.randn(1, 1, C, p["ctx_before"] + 700 + p["ctx_after"])  # 10 tiles of 64 and one of 60
    with torch.inference_mode():
        net.tile = 10**9
        one = net(x)
        net.tile = site_ephys.TILE
        tiled = net(x)
    assert tiled.shape == one.shape == (1, 1, C, 700)
    torch.testing.assert_close(tiled, one, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("card", cards(), ids=lambda c: f"{c.params['preset']}-{c.pre}-{c.post}")
def test_onnxruntime_runs_a_block_in_tiles_equal_to_one_pass(card, tmp_path):
    from livedenoise.export.engines import open_engine
    from livedenoise.export.onnx_export import export_onnx
    from livedenoise.models.checkpoint import save_checkpoint

    net = _random_net(card).float()
    save_checkpoint(tmp_path / "m.pt", card, net.state_dict())
    export_onnx(tmp_path / "m.pt", tmp_path / "m.onnx", frame_shape=(C, 512))
    eng = open_engine(tmp_path / "m.onnx", "onnxruntime", threads=1)
    p = card.params
    ctx = p["ctx_before"] + p["ctx_after"]
    assert eng._tile == (site_ephys.TILE, ctx)  # the architecture's tile (Arch.tile)
    x = np.random.default_rng(1).standard_normal((2, 1, C, ctx + 700)).astype(np.float32)  # 10 tiles + 60 samples
    out = np.full((2, C, 700), np.nan, np.float32)
    got = eng.run(x, out)
    assert got is out and np.isfinite(out).all()
    with torch.inference_mode():
        net.tile = 10**9
        one = net(torch.from_numpy(x))[:, 0].numpy()
    np.testing.assert_allclose(got, one, rtol=1e-4, atol=1e-4)


def test_keep_noise_gives_back_that_fraction_of_what_was_removed():
    import dataclasses

    card = cards()[0]
    net = _random_net(card).float()
    x = torch.randn(1, 1, C, card.params["ctx_before"] + 100 + card.params["ctx_after"]) * 3
    xc = x[..., card.params["ctx_before"]:-card.params["ctx_after"]]
    outs = {}
    for keep in (0.0, 0.5, 1.0):
        c2 = dataclasses.replace(card, params={**card.params, "keep_noise": keep})
        n2 = build_network(c2)
        n2.load_state_dict(net.state_dict())
        with torch.inference_mode():
            outs[keep] = n2.eval()(x)
    torch.testing.assert_close(outs[1.0], xc)  # everything given back: the input itself
    torch.testing.assert_close(outs[0.5], 0.5 * (outs[0.0] + xc))
    with pytest.raises(ValueError, match="keep_noise"):
        build_network(dataclasses.replace(card, params={**card.params, "keep_noise": 1.5}))


def test_the_onnx_export_has_constant_convolution_weights(tmp_path):
    # onnxruntime runs a convolution in its fast blocked layout only when the weight is a constant: a slice of a
    # parameter computed from a runtime shape left the first layer's convolutions on the slow path
    import onnx

    from livedenoise.export.onnx_export import export_onnx
    from livedenoise.models.checkpoint import save_checkpoint

    card = cards()[0]
    save_checkpoint(tmp_path / "m.pt", card, _random_net(card).float().state_dict())
    export_onnx(tmp_path / "m.pt", tmp_path / "m.onnx", frame_shape=(C, 512))
    g = onnx.load(tmp_path / "m.onnx").graph
    constants = {i.name for i in g.initializer} | {o for n in g.node if n.op_type == "Constant" for o in n.output}
    convs = [n for n in g.node if n.op_type == "Conv"]
    assert len(convs) >= 5
    assert [n.name for n in convs if n.input[1] not in constants] == []
