"""The imaging pipeline core (stream/pipeline.py), driven directly: push/collect patterns, segments, the length rule.

Real models (random-init interp2d lite and DeepCAD-RT checkpoints) in PyTorch; the
socket-level equivalents are in test_stream_equals_offline.py.
"""

import logging

import numpy as np
import pytest
from streamkit import make_checkpoint

from livedenoise.errors import UserError
from livedenoise.export.engines import open_engine
from livedenoise.models.innovation import step_for
from livedenoise.models.norm import estimate_norm
from livedenoise.models.registry import min_frames
from livedenoise.stream.offline import denoise_array
from livedenoise.stream.pipeline import FramePipeline

CONFIGS = [("interp2d", 3, 0, None), ("interp2d", 3, 1, None), ("interp2d", 3, 0, 1.0), ("interp2d", 3, 1, 1.0),
           ("cad3d", 3, 1, None)]
IDS = ["causal", "lag1", "causal+innovation", "lag1+innovation", "cad3d-lag1"]


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    d = tmp_path_factory.mktemp("pipe")
    out = {}
    for arch, pre, post, _ in CONFIGS:
        key = (arch, pre, post)
        if key not in out:
            out[key] = open_engine(make_checkpoint(d / f"{arch}-{pre}-{post}.pt", pre=pre, post=post, seed=post,
                                                   arch=arch), "torch")
    return out


def movie(t=30, seed=0, shape=(16, 24)):
    rng = np.random.default_rng(seed)
    return (100 + 20 * rng.standard_normal((t, *shape)) + np.linspace(0, 20, t)[:, None, None]).astype(np.int16)


def close(a, b):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(np.abs(b).max()))


def live(engine, frames, counters=None, innovation=None, seed=0, max_batch=4, policy="all"):
    """Push frames one at a time, collecting greedily at random moments, as the service does; outputs in order."""
    rng = np.random.default_rng(seed)
    pipe = FramePipeline(engine, frames.shape[1:], frames.dtype, capacity=64, max_batch=max_batch,
                         innovation=innovation)
    got: dict[int, np.ndarray] = {}
    flags: dict[int, bool] = {}

    def take():
        while rng.random() < 0.7 and (job := pipe.collect(policy)) is not None:
            res = pipe.run(job)
            for k in range(len(res)):
                got[int(res.index[k])] = res.frames[k].copy()
                flags[int(res.index[k])] = bool(res.passthrough[k])

    for t in range(len(frames)):
        pipe.push(frames[t], None if counters is None else int(counters[t]), t / 30.0, 0.0)
        take()
    pipe.finish()
    while (job := pipe.collect(policy)) is not None:
        res = pipe.run(job)
        for k in range(len(res)):
            got[int(res.index[k])] = res.frames[k].copy()
            flags[int(res.index[k])] = bool(res.passthrough[k])
    assert sorted(got) == list(range(len(frames)))
    return np.stack([got[t] for t in range(len(frames))]), np.array([flags[t] for t in range(len(frames))]), pipe


def _step(engine, k):
    return step_for(engine.card, False, k)[0]


@pytest.mark.parametrize("arch,pre,post,k", CONFIGS, ids=IDS)
def test_pushing_frame_by_frame_equals_offline(engines, arch, pre, post, k):
    eng = engines[(arch, pre, post)]
    mov = movie(23)  # 23 frames: the last batch is partial, the end falls mid-window
    ref = denoise_array(eng, mov, batch=5, innovation=_step(eng, k))
    got, passthrough, pipe = live(eng, mov, innovation=_step(eng, k))
    close(got, ref)
    assert passthrough.sum() == (1 if post == 0 else 0) and pipe.stats.overflow == 0


@pytest.mark.parametrize("arch,pre,post,k", CONFIGS, ids=IDS)
def test_a_gap_splits_the_movie_into_independent_segments(engines, arch, pre, post, k):
    """Frames 0..11 then 15..29: each side is denoised as if it were a movie of its own (nothing invented)."""
    eng = engines[(arch, pre, post)]
    mov = movie(27, seed=1)
    counters = np.r_[np.arange(12), np.arange(15, 30)]
    whole = denoise_array(eng, mov, batch=4, counters=counters, innovation=_step(eng, k))
    close(whole[:12], denoise_array(eng, mov[:12], batch=4, innovation=_step(eng, k)))
    close(whole[12:], denoise_array(eng, mov[12:], batch=4, innovation=_step(eng, k)))
    got, _, pipe = live(eng, mov, counters, innovation=_step(eng, k), seed=2)
    close(got, whole)
    assert pipe.stats.dropped_upstream == 3 and pipe.stats.gaps == 1


def test_no_frame_before_a_gap_is_an_input_after_it(engines):
    """Perturbation: change the frame before the gap; no output after the gap changes (offline and live)."""
    eng = engines[("interp2d", 3, 1)]
    mov = movie(24, seed=3)
    counters = np.r_[np.arange(10), np.arange(13, 27)]
    bumped = mov.copy()
    bumped[9] += 500
    a = denoise_array(eng, mov, batch=4, counters=counters)
    b = denoise_array(eng, bumped, batch=4, counters=counters)
    np.testing.assert_array_equal(a[10:], b[10:])
    assert np.abs(a[8] - b[8]).max() > 1.0  # frame 9 is an input of frame 8 (lag 1), so the bump shows there
    la, _, _ = live(eng, mov, counters)
    lb, _, _ = live(eng, bumped, counters, seed=5)
    close(la[10:], lb[10:])
    close(la, a)


def test_a_counter_that_falls_back_is_a_restart(engines):
    eng = engines[("cad3d", 3, 1)]
    mov = movie(20, seed=4)
    counters = np.r_[np.arange(100, 110), np.arange(0, 10)]
    whole = denoise_array(eng, mov, batch=3, counters=counters)
    close(whole[:10], denoise_array(eng, mov[:10], batch=3))
    close(whole[10:], denoise_array(eng, mov[10:], batch=3))
    got, _, pipe = live(eng, mov, counters, seed=6)
    close(got, whole)
    assert pipe.stats.restarts == 1 and pipe.stats.dropped_upstream == 0


def test_a_segment_shorter_than_min_frames_passes_through_raw(engines, caplog):
    eng = engines[("cad3d", 3, 1)]
    need = min_frames(eng.card)
    assert need == 6
    mov = movie(12, seed=5)
    counters = np.r_[np.arange(8), np.arange(20, 24)]  # a 4-frame segment after the gap
    with caplog.at_level(logging.WARNING, logger="livedenoise.stream"):
        got, passthrough, pipe = live(eng, mov, counters)
    np.testing.assert_array_equal(got[8:], mov[8:].astype(np.float32))
    assert passthrough.tolist() == [False] * 8 + [True] * 4
    assert pipe.stats.too_short == 4 and pipe.passthrough == 4
    assert len([r for r in caplog.records if "minimum of 6 frames" in r.getMessage()]) == 1
    close(got[:8], denoise_array(eng, mov[:8], batch=4))


def test_outputs_wait_for_min_frames_then_follow_lag(engines):
    eng = engines[("cad3d", 3, 1)]  # lag 1, min_frames 6
    pipe = FramePipeline(eng, (16, 24), np.int16, capacity=32, max_batch=8)
    mov = movie(8)
    for t in range(5):
        pipe.push(mov[t])
        assert pipe.collect() is None  # 5 frames: not yet known to be long enough
    pipe.push(mov[5])
    job = pipe.collect()
    assert job is not None and job.n == 5  # frames 0..4 (frame 5 waits for frame 6: lag 1)
    res = pipe.run(job)
    assert res.index.tolist() == [0, 1, 2, 3, 4] and not res.passthrough.any()


def test_full_batches_do_not_depend_on_how_frames_arrive(engines):
    """Offline batching: frames [k*B, (k+1)*B) whatever the pushes, so results are bit-identical."""
    eng = engines[("interp2d", 3, 1)]
    mov = movie(21, seed=7)
    outs = []
    for sizes in ([21], [1] * 21, [5, 3, 9, 4]):
        pipe = FramePipeline(eng, mov.shape[1:], mov.dtype, capacity=64, max_batch=4)
        batches, frames, a = [], [], 0
        for n in sizes:
            pipe.push_many(mov[a:a + n])
            a += n
            for res in pipe.drain(full=True):
                batches.append(res.index.tolist())
                frames.append(res.frames.copy())
        pipe.finish()
        for res in pipe.drain(full=True):
            batches.append(res.index.tolist())
            frames.append(res.frames.copy())
        assert batches == [list(range(i, min(i + 4, 21))) for i in range(0, 21, 4)]
        outs.append(np.concatenate(frames))
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])


def test_renorm_uses_the_first_n_frames_and_waits_for_them(engines):
    eng = engines[("interp2d", 3, 0)]
    mov = movie(20, seed=8)
    pipe = FramePipeline(eng, mov.shape[1:], mov.dtype, capacity=32, max_batch=4, renorm=10)
    for t in range(9):
        pipe.push(mov[t])
        assert pipe.collect() is None
    pipe.push(mov[9])
    assert pipe.collect() is not None
    assert (pipe.mean, pipe.std) == pytest.approx(estimate_norm(mov[:10]), rel=1e-9)


def test_policy_latest_keeps_the_newest_and_counts_skips(engines):
    eng = engines[("interp2d", 3, 0)]
    pipe = FramePipeline(eng, (16, 24), np.int16, capacity=64, max_batch=4)
    pipe.push_many(movie(20))
    res = pipe.run(pipe.collect("latest"))
    assert res.index.tolist() == [16, 17, 18, 19] and pipe.stats.skipped == 16


def test_frames_the_ring_overwrote_are_counted_as_overflow(engines):
    eng = engines[("interp2d", 3, 0)]
    pipe = FramePipeline(eng, (16, 24), np.int16, capacity=8, max_batch=4)
    pipe.push_many(movie(20))
    res = pipe.run(pipe.collect())
    # frames 0..11 are gone; 12..14 need frames before the oldest held (12): overflow too
    assert res.index.tolist() == [15, 16, 17, 18] and pipe.stats.overflow == 15


def test_estimate_norm_streams_chunks_and_survives_constant_frames():
    x = np.random.default_rng(0).normal(1e4, 3.0, (12, 8, 8))
    m, s = estimate_norm(x)
    m2, s2 = estimate_norm(iter([x[:5], x[5:6], x[6:]]))
    assert m == pytest.approx(x.mean(), rel=1e-12) and s == pytest.approx(x.std(), rel=1e-9)
    assert (m2, s2) == pytest.approx((m, s), rel=1e-9)
    assert estimate_norm(np.full((3, 4, 4), 7, np.int16)) == (7.0, 1.0)
    assert estimate_norm([]) == (0.0, 1.0)


def test_six_frame_movie_length_rule_is_the_same_for_train_and_denoise(tmp_path):
    """A 6-frame movie: interp2d (window of 9) is accepted by both; cad3d pre 5 post 1 refused by both, with one number."""
    from livedenoise.train.imaging import TrainConfig, train

    six = movie(6, seed=9, shape=(32, 32))
    interp = open_engine(make_checkpoint(tmp_path / "i.pt", pre=8, post=1), "torch")
    cad = open_engine(make_checkpoint(tmp_path / "c.pt", pre=5, post=1, arch="cad3d"), "torch")
    assert min_frames(interp.card) == 2 and min_frames(cad.card) == 8
    assert denoise_array(interp, six).shape == six.shape
    with pytest.raises(UserError, match="has 6 frames but this cad3d model needs at least 8") as denoise_err:
        denoise_array(cad, six)
    with pytest.raises(UserError, match="needs at least 8") as train_err:
        train([six], TrainConfig(arch="cad3d", pre=5, post=1, steps=1, device="cpu", progress=False))
    assert str(train_err.value).split(" has ")[1] == str(denoise_err.value).split(" has ")[1]
    card, _, _ = train([six], TrainConfig(arch="interp2d", preset="lite", pre=8, post=1, steps=1, device="cpu",
                                          progress=False))
    assert min_frames(card) == 2


def test_denoise_array_is_one_entry_point_for_imaging_and_ephys(tmp_path):
    """`stream.offline.denoise_array(engine, data)` hands ephys models to the ephys pipeline."""
    import torch

    from livedenoise.models.checkpoint import save_checkpoint
    from livedenoise.models.nets import interp_ephys
    from livedenoise.models.registry import build_network
    from livedenoise.stream import ephys

    card = interp_ephys.make_card(4, 4, 2, 1, "lite", norm_mean=0.0, norm_std=10.0)
    torch.manual_seed(0)
    eng = open_engine(save_checkpoint(tmp_path / "e.pt", card, build_network(card).state_dict()), "torch")
    uv = (np.random.default_rng(0).standard_normal((500, 4)) * 20).astype(np.float32)
    np.testing.assert_array_equal(denoise_array(eng, uv, chunk=128), ephys.denoise_samples(eng, uv, chunk=128))


def offline_pipe(engine, frames, **kw):
    """Push every frame, finish, drain: outputs (T, H, W), passthrough flags (T,) and the pipeline."""
    pipe = FramePipeline(engine, frames.shape[1:], frames.dtype, capacity=len(frames) + 4, max_batch=4, **kw)
    for f in frames:
        pipe.push(f)
    pipe.finish()
    out = np.full(frames.shape, -1.0, np.float32)
    raw = np.zeros(len(frames), bool)
    for res in pipe.drain():
        out[res.index] = res.frames
        raw[res.index] = res.passthrough
    return out, raw, pipe


@pytest.mark.parametrize("with_innovation", [False, True])
def test_non_finite_pixels_stay_where_they_were(engines, with_innovation):
    engine = engines[("interp2d", 3, 1)]
    clean = movie(t=24, seed=3).astype(np.float32)
    frames = clean.copy()
    frames[:, :, :2] = np.nan  # motion-correction borders, ~8% of the pixels
    frames[5:9, 6:10, 10:14] = np.inf  # one Inf patch
    innovation = step_for(engine.card, True, 1.0)[0] if with_innovation else None
    out, raw, pipe = offline_pipe(engine, frames, innovation=innovation)
    bad = ~np.isfinite(frames)
    assert np.isnan(out[bad & ~raw[:, None, None]]).all(), "non-finite raw pixels come out masked (NaN)"
    assert np.isfinite(out[~bad]).all(), "and nothing else does"
    assert pipe.stats.nonfinite == int(bad[~raw].sum())
    if not with_innovation:  # the finite pixels: denoised as if the bad ones held the normalisation mean
        filled = np.where(bad, np.float32(engine.card.norm_mean), frames)
        ref, _, _ = offline_pipe(engine, filled)
        np.testing.assert_allclose(out[~bad], ref[~bad], rtol=1e-5, atol=1e-4)


def test_explicit_normalisation_replaces_the_cards(engines):
    import dataclasses

    from livedenoise.export.engines.torch import TorchEngine

    engine = engines[("interp2d", 3, 1)]
    frames = movie(t=20, seed=4)
    mean, std = estimate_norm(frames)
    out, _, _ = offline_pipe(engine, frames, norm=(mean, std))
    card = dataclasses.replace(engine.card, norm_mean=mean, norm_std=std)
    same, _, _ = offline_pipe(TorchEngine(card, engine.net, "cpu"), frames)
    close(out, same)
    with pytest.raises(ValueError, match="std > 0"):
        FramePipeline(engine, frames.shape[1:], frames.dtype, capacity=30, norm=(0.0, 0.0))


def test_slow_renormalisation_follows_a_drift_and_depends_on_the_index_only(engines):
    engine = engines[("interp2d", 3, 1)]
    rng = np.random.default_rng(5)
    t = 60
    drift = np.linspace(1.0, 3.0, t)[:, None, None]  # slow bleaching in reverse: the movie gets 3x brighter
    frames = (100 * drift + 10 * rng.standard_normal((t, 16, 24))).astype(np.float32)

    def run(chunks, max_batch):
        pipe = FramePipeline(engine, frames.shape[1:], frames.dtype, capacity=64, max_batch=max_batch, renorm=10,
                             renorm_rate=0.5)
        out, a = np.zeros_like(frames), 0
        for n in chunks:
            for f in frames[a:a + n]:
                pipe.push(f)
            a += n
            for res in pipe.drain():
                out[res.index] = res.frames
        pipe.finish()
        for res in pipe.drain():
            out[res.index] = res.frames
        return out, pipe

    whole, pipe = run([t], 8)
    pieces, _ = run([7, 3, 11, 1, 20, 18], 3)  # other chunks and batches: the same frames (index-only rule)
    close(pieces, whole)
    first_only = estimate_norm(frames[:10])
    assert pipe.mean > first_only[0] * 1.5, "the statistics followed the drift"
    # block 2 (outputs 20..29) uses 0.5 * first + 0.5 * frames 10..19
    m1 = estimate_norm(frames[10:20])[0]
    assert pipe._norm_block == (t - 1) // 10
    expected = first_only[0]
    for k in range(2, pipe._norm_block + 1):
        expected = 0.5 * expected + 0.5 * estimate_norm(frames[(k - 1) * 10:k * 10])[0]
    assert pipe.mean == pytest.approx(expected, rel=1e-6)
    assert m1 > first_only[0]


def test_each_frame_is_normalised_once_however_many_windows_hold_it(engines, monkeypatch):
    """pre 3 post 1: a frame enters 4 windows; the windows are still exactly the per-window normalisation."""
    import livedenoise.stream.pipeline as pipeline_module
    from livedenoise.models.norm import normalise

    calls = []

    def counting(frames, mean, std, out=None):
        calls.append(1)
        return normalise(frames, mean, std, out=out)

    monkeypatch.setattr(pipeline_module, "normalise", counting)
    eng = engines[("interp2d", 3, 1)]
    mov = movie(30, seed=4)
    pipe = FramePipeline(eng, mov.shape[1:], mov.dtype, capacity=64, max_batch=4)
    pipe.push_many(mov)
    pipe.finish()
    card = eng.card
    while (job := pipe.collect("all")) is not None:
        b = job.batch
        for k in range(job.n):
            assert not b.passthrough[k]
            idx = card.window.source_indices(int(b.index[k]), len(mov) - 1)
            np.testing.assert_array_equal(b.windows[b.row[k]], normalise(mov[idx], card.norm_mean, card.norm_std))
        pipe.run(job)
    assert len(calls) == len(mov), f"{len(calls)} normalisations for {len(mov)} frames"
