"""fmri-blind: blind-spot perturbation tests (symmetric, short-lag, causal) and ONNX export parity, random weights."""

import numpy as np
import pytest
import torch

from livedenoise.models.nets import fmri_blind

SHAPE = (9, 8, 7)  # (I, J, K) voxels
T = 12


def _net(variant, preset="fast", seed=0):
    torch.manual_seed(seed)
    card = fmri_blind.make_card(variant=variant, preset=preset)
    net = fmri_blind.build(card).eval()
    with torch.no_grad():  # make every weight count (default init leaves dead ReLUs at random)
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return card, net


def _denoise(card, net, vols):
    """Every volume of a (T, I, J, K) run, windows by the card's edge rule (a finished run: last = T - 1);
    a volume with no window (a causal model's first) is passed through raw, as the pipeline does."""
    idx = [card.window.source_indices(t, len(vols) - 1) for t in range(len(vols))]
    rows = [t for t in range(len(vols)) if idx[t] is not None]
    x = torch.from_numpy(np.stack([vols[idx[t]] for t in rows]))
    out = vols.copy()
    with torch.no_grad():
        out[rows] = net(x.float())[:, 0].numpy()
    return out


def _run(seed=1):
    return np.random.default_rng(seed).standard_normal((T, *SHAPE)).astype(np.float32)


@pytest.mark.parametrize("variant,pre,post", [("symmetric", 2, 2), ("short-lag", 3, 1), ("causal", 4, 0)])
def test_variant_windows(variant, pre, post):
    card = fmri_blind.make_card(variant=variant)
    assert (card.pre, card.post, card.lag, card.modality) == (pre, post, post, "fmri")
    assert card.offsets == list(range(-pre, post + 1))
    net = fmri_blind.build(card)
    assert net(fmri_blind.example_input(card, SHAPE)).shape == (1, 1, *SHAPE)


@pytest.mark.parametrize("variant", ["symmetric", "short-lag", "causal"])
@pytest.mark.parametrize("preset", ["fast", "base"])
def test_output_voxel_never_reads_its_own_input_voxel(variant, preset):
    card, net = _net(variant, preset)
    vols = _run()
    base = _denoise(card, net, vols)
    t, v = 6, (4, 3, 3)
    bumped = vols.copy()
    bumped[(t, *v)] += 100.0
    out = _denoise(card, net, bumped)
    assert out[(t, *v)] == base[(t, *v)]  # exactly: the hidden voxel is not read at all
    # not vacuous: the same bump changes the neighbours of v in volume t (they read it)
    assert np.abs(out[t] - base[t]).max() > 1e-3
    # and a voxel of the cube around v, in volume t, does change output v at t
    near = vols.copy()
    near[(t, 5, 3, 3)] += 100.0
    assert abs(_denoise(card, net, near)[(t, *v)] - base[(t, *v)]) > 1e-4


@pytest.mark.parametrize("variant", ["symmetric", "short-lag", "causal"])
def test_nothing_after_the_lag_reaches_back(variant):
    card, net = _net(variant)
    vols = _run(2)
    base = _denoise(card, net, vols)
    t = 5
    later = vols.copy()
    later[t + card.lag + 1:] += np.random.default_rng(3).standard_normal(later[t + card.lag + 1:].shape).astype(np.float32) * 50
    out = _denoise(card, net, later)
    np.testing.assert_array_equal(out[:t + 1], base[:t + 1])  # no output at or before t changes
    assert np.abs(out[t + 1:] - base[t + 1:]).max() > 1e-3


def test_spatial_reach_is_the_7_cube():
    card, net = _net("symmetric")
    x = torch.randn(1, card.n_inputs, 15, 15, 15)
    with torch.no_grad():
        base = net(x)
        far = x.clone()
        far[0, 0, 7 + 4, 7, 7] += 100.0  # 4 voxels away: outside the 7x7x7 cube around (7, 7, 7)
        assert net(far)[0, 0, 7, 7, 7] == base[0, 0, 7, 7, 7]
        near = x.clone()
        near[0, 0, 7 + 3, 7, 7] += 100.0  # 3 voxels away: inside
        assert net(near)[0, 0, 7, 7, 7] != base[0, 0, 7, 7, 7]
    assert fmri_blind.spatial_extent(card) == (7, 7, 7) and net.spatial_receptive_field() == 7


def test_refuses_bad_windows_and_presets():
    with pytest.raises(ValueError, match="omission"):
        fmri_blind.window(2, 2, 1)
    with pytest.raises(ValueError, match="preset"):
        fmri_blind.preset_params("huge")
    with pytest.raises(ValueError, match="variant"):
        fmri_blind.make_card(variant="acausal")


@pytest.mark.parametrize("variant", ["symmetric", "causal"])
def test_onnx_export_parity(tmp_path, variant):
    ort = pytest.importorskip("onnxruntime")
    card, net = _net(variant)
    path = tmp_path / "fmri.onnx"
    torch.onnx.export(net, fmri_blind.example_input(card, (8, 8, 8)), str(path), dynamo=False, input_names=["input"],
                      output_names=["output"], dynamic_axes=fmri_blind.dynamic_axes(), opset_version=17)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(2, card.n_inputs, *SHAPE)  # another batch and volume size than exported: axes are dynamic
    with torch.no_grad():
        want = net(x).numpy()
    got = sess.run(None, {"input": x.numpy()})[0]
    assert got.shape == (2, 1, *SHAPE)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_self_supervised_fit_on_a_noisy_run_denoises_it():
    """Trained on the noisy run alone (target = the noisy volume t itself), the blind spot forces a denoiser."""
    from scipy.ndimage import gaussian_filter

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    n = 32
    truth = gaussian_filter(rng.standard_normal((n, 10, 10, 8)).astype(np.float32), (1.5, 2, 2, 2))
    truth /= truth.std()
    noisy = truth + 0.7 * rng.standard_normal(truth.shape).astype(np.float32)
    card = fmri_blind.make_card(variant="symmetric")
    net = fmri_blind.build(card)
    x = torch.from_numpy(np.stack([noisy[card.window.source_indices(t, n - 1)] for t in range(n)]))
    y = torch.from_numpy(noisy[:, None])
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    for _ in range(100):
        idx = torch.from_numpy(rng.integers(0, n, 8))
        loss = ((net(x[idx]) - y[idx]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = net(x)[:, 0].numpy()
    assert ((pred - truth) ** 2).mean() < 0.4 * ((noisy - truth) ** 2).mean()
