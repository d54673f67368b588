"""fMRI runs through the imaging pipeline (volumes as frames): blind-spot and causality perturbation tests of the
whole offline path (windows, edge rule, normalisation, engine), chunking invariance, and NIfTI in / NIfTI out."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from livedenoise.errors import UserError
from livedenoise.export.engines.torch import TorchEngine
from livedenoise.models import registry
from livedenoise.models.window import WindowSpec
from livedenoise.stream.offline import denoise_array

SHAPE = (9, 10, 8)
T = 11
VARIANTS = {"symmetric": (2, 2), "short-lag": (3, 1), "causal": (4, 0)}
NORM = (100.0, 5.0)  # given statistics: a perturbation must not move the normalisation


def _engine(variant: str, seed: int = 0) -> TorchEngine:
    torch.manual_seed(seed)
    pre, post = VARIANTS[variant]
    card = registry.make_card("fmri-blind", pre=pre, post=post)
    net = registry.build_network(card).eval()
    with torch.no_grad():  # every weight counts (no dead ReLU hides a dependence)
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return TorchEngine(card, net, "cpu")


def _run(seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(100.0, 5.0, (T, *SHAPE)).astype(np.float32)


def _den(eng, vols, **kw):
    return denoise_array(eng, vols, norm=NORM, batch=4, **kw)


def _passthrough(eng, t: int, n: int = T) -> bool:
    return eng.card.window.source_indices(t, n - 1) is None


@pytest.mark.parametrize("last", [None, 0, 1, 2, 5, 12])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_a_blind_window_never_reads_volume_t_through_another_channel(variant, last):
    pre, post = VARIANTS[variant]
    spec = registry.make_card("fmri-blind", pre=pre, post=post).window
    assert spec.blind
    for t in range(0, 12 if last is None else last + 1):
        idx = spec.source_indices(t, last)
        if idx is None:
            continue
        others = [int(j) for o, j in zip(spec.offsets, idx) if o != 0]
        assert t not in others and max(idx) <= t + post and min(idx) >= 0
        assert last is None or max(idx) <= last
    # a plain window with offset 0 (a classic filter) keeps its rule: its edges may read t in any channel
    assert WindowSpec((-1, 0), 0).source_indices(0, None).tolist() == [0, 0]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_output_voxel_never_depends_on_its_own_input_voxel(variant):
    """Every volume, edges included: bump voxel v of volume t; output v at t does not move, its neighbours do."""
    eng = _engine(variant)
    vols = _run()
    base = _den(eng, vols)
    v = (4, 5, 3)
    corner = (0, 0, 0)
    for t in range(T):
        for vox in (v, corner):
            bumped = vols.copy()
            bumped[(t, *vox)] += 500.0
            out = _den(eng, bumped)
            if _passthrough(eng, t):  # a causal model's first volume: raw, flagged (no other volume to read)
                assert out[(t, *vox)] == bumped[(t, *vox)]
                continue
            assert abs(out[(t, *vox)] - base[(t, *vox)]) <= 1e-3, (variant, t, vox)
            assert np.abs(out[t] - base[t]).max() > 0.05  # not vacuous: the neighbours of v read it


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_nothing_past_the_lag_reaches_back(variant):
    eng = _engine(variant)
    lag = eng.card.lag
    vols = _run(2)
    base = _den(eng, vols)
    for s in range(2, T):
        later = vols.copy()
        later[s:] += np.random.default_rng(s).normal(0.0, 50.0, later[s:].shape).astype(np.float32)
        out = _den(eng, later)
        keep = max(0, s - lag)  # outputs 0 .. s - lag - 1 read nothing from volume s on
        np.testing.assert_array_equal(out[:keep], base[:keep])
        assert np.abs(out[keep] - base[keep]).max() > 0.05  # output s - lag does read volume s


def test_chunks_and_batches_do_not_change_the_output():
    eng = _engine("symmetric")
    vols = _run(3)
    a = _den(eng, vols, chunk=4)
    b = _den(eng, vols, chunk=64)
    np.testing.assert_array_equal(a, b)
    assert a.shape == vols.shape and a.dtype == np.float32


def test_volume_models_and_frame_models_refuse_each_others_data():
    eng = _engine("causal")
    with pytest.raises(UserError, match="reads 4D NIfTI runs"):
        denoise_array(eng, np.zeros((6, 8, 8), np.float32))
    card = registry.make_card("interp2d", preset="lite", pre=2, post=1)
    movie_eng = TorchEngine(card, registry.build_network(card), "cpu")
    with pytest.raises(UserError, match="reads movies of 2D frames"):
        denoise_array(movie_eng, np.zeros((6, 8, 8, 8), np.float32))


def test_a_nifti_run_is_denoised_into_nifti_with_its_header(tmp_path):
    import nibabel as nib

    from livedenoise.io.nifti import open_nifti
    from livedenoise.models.checkpoint import save_checkpoint
    from livedenoise.stream.offline import denoise_file

    eng = _engine("short-lag")
    model = save_checkpoint(tmp_path / "m.pt", eng.card, eng.net.state_dict())
    vols = _run(4)
    affine = np.array([[-2.5, 0, 0, 40.0], [0, 2.5, 0, -30.0], [0, 0, 3.0, -12.0], [0, 0, 0, 1]])
    img = nib.Nifti1Image(np.moveaxis(vols, 0, 3), affine)
    img.header.set_xyzt_units("mm", "msec")
    img.header.set_zooms((2.5, 2.5, 3.0, 1500.0))
    img.header["descrip"] = b"scanner run"
    src = tmp_path / "sub-01_task-rest_bold.nii.gz"
    nib.save(img, src)
    dst = tmp_path / "den_bold.nii.gz"
    stats = denoise_file(src, dst, model, progress=False, norm=NORM, batch=4, out_dtype="float32")
    assert stats.frames == T and dst.exists() and not list(tmp_path.glob("*.partial*"))
    with open_nifti(dst) as out, open_nifti(src) as inp:
        assert out.tr == pytest.approx(1.5) and out.units == ("mm", "msec")
        np.testing.assert_array_equal(out.affine, inp.affine)
        assert out.header["descrip"] == inp.header["descrip"]
        assert (out.header["sform_code"], out.header["qform_code"]) == (inp.header["sform_code"], inp.header["qform_code"])
        np.testing.assert_allclose(out.read(0, T), _den(eng, vols), rtol=1e-6, atol=1e-4)
    with pytest.raises(UserError, match="output is NIfTI too"):
        denoise_file(src, tmp_path / "den.tif", model, progress=False)
    assert not (tmp_path / "den.tif").exists()
