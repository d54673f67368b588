"""A 4D NIfTI run replayed at its TR into `serve` comes out volume for volume equal to `livedenoise denoise` of
the file (real ZeroMQ sockets on loopback, a real fmri-blind checkpoint), and `--record` keeps the volumes."""

import numpy as np
import pytest
import torch
from streamkit import Collector, RunningService, cfg_factory  # noqa: F401

from livedenoise.errors import UserError
from livedenoise.models import registry
from livedenoise.models.checkpoint import save_checkpoint
from livedenoise.stream.offline import denoise_file
from livedenoise.stream.replay import replay_movie
from livedenoise.stream.sinks.recorder import read_recording

T = 14
SHAPE = (6, 7, 5)
TR = 0.02  # seconds: a fast "scanner" for the test


def _nifti(path, vols, tr=TR, unit="sec"):
    import nibabel as nib

    img = nib.Nifti1Image(np.moveaxis(vols, 0, 3), np.diag([3.0, 3.0, 3.5, 1.0]))
    img.header.set_xyzt_units("mm", unit)
    img.header.set_zooms((3.0, 3.0, 3.5, tr))
    nib.save(img, path)
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("fmri-stream")
    rng = np.random.default_rng(5)
    vols = np.clip(rng.normal(600, 40, (T, *SHAPE)), 0, 3e4).astype(np.int16)
    return _nifti(d / "sub-01_task-rt_bold.nii.gz", vols), vols


def _checkpoint(path, pre, post, seed=0):
    torch.manual_seed(seed)
    card = registry.make_card("fmri-blind", pre=pre, post=post, norm_mean=600.0, norm_std=40.0)
    net = registry.build_network(card)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return save_checkpoint(path, card, net.state_dict())


@pytest.mark.parametrize("pre,post", [(2, 2), (4, 0)], ids=["symmetric", "causal"])
def test_streamed_volumes_equal_offline_denoise(tmp_path, run, cfg_factory, pre, post):
    from livedenoise.io.nifti import open_nifti

    path, vols = run
    model = _checkpoint(tmp_path / "m.pt", pre, post)
    cfg = cfg_factory(model=str(model), record=str(tmp_path / "rec"), max_batch=3)
    svc = RunningService(cfg)
    col = Collector(cfg.output)
    try:
        assert col.wait_for(lambda m: getattr(m, "topic", "") == "stats"), "no stats from the service"
        summary = replay_movie(path, cfg.input, fps=None, wait_s=20)  # paced at the header's TR
        assert summary["frames"] == T
        assert col.wait_for(lambda m: getattr(m, "topic", "") == "stop"), "no stop forwarded"
        final = svc.stop()
    finally:
        col.close()
        if svc.thread.is_alive():
            svc.stop()
    out = tmp_path / "offline.nii.gz"
    denoise_file(path, out, model, out_dtype="float32", progress=False, norm="card", batch=3)
    with open_nifti(out) as f:
        offline = f.read(0, T)
    frames = col.frames()
    assert [f.header.frame for f in frames] == list(range(T))
    assert all(f.pixels.shape == SHAPE and f.header.shape == SHAPE for f in frames)
    streamed = np.stack([f.pixels for f in frames])
    np.testing.assert_allclose(streamed, offline, rtol=1e-5, atol=1e-3)
    assert not np.allclose(streamed, vols, atol=1.0)  # the model did change the volumes
    assert final["frames_in"] == final["frames_out"] == T
    assert final["passthrough"] == (1 if post == 0 else 0)  # a causal model's first volume: raw, flagged
    assert final["malformed"] == final["dropped_upstream"] == final["engine_errors"] == 0
    starts = [m.meta for m, _ in col.messages if getattr(m, "topic", "") == "start"]
    assert starts and starts[0]["tr"] == pytest.approx(TR) and starts[0]["depth"] == SHAPE[0]
    raw = read_recording(tmp_path / "rec" / "raw_c1_p1_a001.h5")
    den = read_recording(tmp_path / "rec" / "denoised_c1_p1_a001.h5")
    np.testing.assert_array_equal(raw["frames"], vols)
    np.testing.assert_array_equal(den["frames"], streamed)


def test_a_frame_model_only_records_a_volume_stream(tmp_path, run, cfg_factory):
    from streamkit import make_checkpoint

    path, vols = run
    model = make_checkpoint(tmp_path / "m2d.pt", pre=2, post=1)
    cfg = cfg_factory(model=str(model), record=str(tmp_path / "rec"))
    svc = RunningService(cfg)
    col = Collector(cfg.output)
    try:
        assert col.wait_for(lambda m: getattr(m, "topic", "") == "stats")
        replay_movie(path, cfg.input, fps=200, wait_s=20)
        assert col.wait_for(lambda m: getattr(m, "topic", "") == "stop")
        final = svc.stop()
    finally:
        col.close()
        if svc.thread.is_alive():
            svc.stop()
    assert final["frames_in"] == T and final["engine_errors"] == 1 and final["frames_out"] == 0
    np.testing.assert_array_equal(read_recording(tmp_path / "rec" / "raw_c1_p1_a001.h5")["frames"], vols)


def test_a_run_without_tr_needs_fps(tmp_path):
    vols = np.zeros((4, *SHAPE), np.int16)
    path = _nifti(tmp_path / "no_tr.nii", vols, tr=0.0, unit="unknown")
    with pytest.raises(UserError, match="--fps"):
        replay_movie(path, "tcp://127.0.0.1:1", fps=None, wait_s=0)
