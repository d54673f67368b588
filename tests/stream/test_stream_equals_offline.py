"""A replayed file comes out of `serve` frame for frame equal to `livedenoise denoise` of that file,
including acquisitions that end mid-window, restart, have gaps, or are shorter than the model's minimum."""


import h5py
import numpy as np
import pytest
from streamkit import Collector, RawPublisher, RunningService, cfg_factory, frame_parts, make_checkpoint  # noqa: F401

from livedenoise.export.engines import TorchEngine
from livedenoise.stream.offline import denoise_array, denoise_file
from livedenoise.stream.protocols.frames import encode_control
from livedenoise.stream.sinks.recorder import read_recording
from livedenoise.stream.replay import replay_movie
from livedenoise.models.norm import estimate_norm


@pytest.fixture(scope="module")
def movie(tmp_path_factory):
    d = tmp_path_factory.mktemp("movie")
    rng = np.random.default_rng(1)
    base = rng.normal(100, 15, (1, 32, 48))
    mov = np.clip(base + rng.normal(0, 10, (40, 32, 48)) + np.linspace(0, 30, 40)[:, None, None], -3e4, 3e4).astype(np.int16)
    path = d / "movie.npy"
    np.save(path, mov)
    return path, mov


def _offline(tmp_path, movie_path, model, innovation_k=None):
    out = tmp_path / f"offline-{innovation_k}.h5"
    denoise_file(movie_path, out, model, out_dtype="float32", progress=False, norm="card", batch=5, innovation_k=innovation_k)
    with h5py.File(out, "r") as f:
        return np.asarray(f[list(f.keys())[0]] if "data" not in f else f["data"])


# The test movie has no calcium events, so the innovation is noise: k=1 lets part of it through
# (shrunk, not zeroed), which the streamed and offline outputs must then agree on.
@pytest.mark.parametrize("arch,post,innovation_k", [("interp2d", 0, None), ("interp2d", 1, None), ("cad3d", 1, None),
                                                    ("interp2d", 0, 1.0), ("interp2d", 1, 1.0),
                                                    ("interp2d-fast", 1, 1.0)],
                         ids=["causal", "lag1", "cad3d-lag1", "causal+innovation", "lag1+innovation",
                              "default-fast-lag1+innovation"])
def test_streamed_output_equals_offline_denoise(tmp_path, movie, cfg_factory, arch, post, innovation_k):
    innovation = innovation_k is not None
    movie_path, mov = movie
    model = make_checkpoint(tmp_path / "m.pt", pre=3, post=post, seed=post, arch=arch)
    cfg = cfg_factory(model=str(model), record=str(tmp_path / "rec"), max_batch=4, innovation_k=innovation_k)
    svc = RunningService(cfg)
    col = Collector(cfg.output)
    try:
        assert col.wait_for(lambda m: getattr(m, "topic", "") == "stats"), "no stats from the service"
        summary = replay_movie(movie_path, cfg.input, fps=200, wait_s=20)
        assert summary["frames"] == 40
        assert col.wait_for(lambda m: getattr(m, "topic", "") == "stop"), "no stop forwarded"
        final = svc.stop()
    finally:
        col.close()
        if svc.thread.is_alive():
            svc.stop()
    offline = _offline(tmp_path, movie_path, model, innovation_k)
    frames = col.frames()
    assert [f.header.frame for f in frames] == list(range(40))
    streamed = np.stack([f.pixels for f in frames])
    assert streamed.dtype == np.float32
    np.testing.assert_allclose(streamed, offline, rtol=1e-5, atol=1e-5 * float(np.abs(offline).max()))
    assert all(f.header.extra["lag"] == post for f in frames)
    assert all(f.header.extra.get("innovation", False) == (innovation and not f.header.extra.get("passthrough"))
               for f in frames)
    if innovation:  # the step changed the frames, so the equality above is about it
        assert np.abs(streamed - _offline(tmp_path, movie_path, model)).max() > 1e-3 * float(np.abs(offline).max())
    assert final["frames_in"] == 40 and final["frames_out"] == 40
    assert final["passthrough"] == (1 if post == 0 else 0)
    assert final["dropped_upstream"] == final["skipped"] == final["overflow"] == final["malformed"] == 0
    # the recordings hold the same frames
    raw = read_recording(tmp_path / "rec" / "raw_c1_p1_a001.h5")
    den = read_recording(tmp_path / "rec" / "denoised_c1_p1_a001.h5")
    np.testing.assert_array_equal(raw["frames"], mov)
    np.testing.assert_array_equal(raw["frame"], np.arange(40))
    np.testing.assert_array_equal(den["frames"], streamed)
    np.testing.assert_array_equal(den["frame"], np.arange(40))
    # start / stop forwarded around the frames
    topics = [getattr(m, "topic", "frame") for m, _ in col.messages if getattr(m, "topic", "") != "stats"]
    assert topics[0] == "start" and topics[-1] == "stop" and topics.count("frame") == 40


def test_renorm_uses_the_first_n_frames_of_the_acquisition(tmp_path, movie, cfg_factory):
    movie_path, mov = movie
    model = make_checkpoint(tmp_path / "m.pt", pre=3, post=1, seed=3)
    cfg = cfg_factory(model=str(model), renorm=10, max_batch=4)
    svc = RunningService(cfg)
    col = Collector(cfg.output)
    try:
        assert col.wait_for(lambda m: getattr(m, "topic", "") == "stats")
        sent = {}
        replay_movie(movie_path, cfg.input, fps=100, wait_s=20, on_sent=lambda h, t: sent.setdefault(h.frame, t))
        assert col.wait_for(lambda m: getattr(m, "topic", "") == "stop")
        svc.stop()
    finally:
        col.close()
    frames = col.frames()
    assert len(frames) == 40
    # offline reference with the card's normalisation replaced by the first 10 frames' statistics
    eng = TorchEngine.from_checkpoint(model)
    eng.card.norm_mean, eng.card.norm_std = estimate_norm(mov[:10])
    ref = denoise_array(eng, mov, batch=4)
    np.testing.assert_allclose(np.stack([f.pixels for f in frames]), ref, rtol=1e-5, atol=1e-3)
    # and `denoise --norm data --renorm 10` gives the same as `serve --norm data --renorm 10`
    out = tmp_path / "renorm.h5"
    stats = denoise_file(movie_path, out, model, out_dtype="float32", progress=False, norm="data", renorm=10, batch=4)
    assert stats.norm["mode"] == "data" and stats.norm["frames"] == 10
    with h5py.File(out, "r") as f:
        np.testing.assert_allclose(np.stack([fr.pixels for fr in frames]), np.asarray(f["data"]), rtol=1e-5, atol=1e-3)
    # no output before the 10th frame had been sent
    first_out = min(t for m, t in col.messages if hasattr(m, "header"))
    assert first_out > sent[9]


def _replay_scanimage(cfg, path, n_frames):
    """Replay a ScanImage TIFF into a running service; (final stats, the collector of its output)."""
    svc = RunningService(cfg)
    col = Collector(cfg.output)
    try:
        assert col.wait_for(lambda m: getattr(m, "topic", "") == "stats")
        assert replay_movie(path, cfg.input, fps=None, wait_s=20)["frames"] == n_frames
        assert col.wait_for(lambda m: getattr(m, "topic", "") == "stop")
        final = svc.stop()
    finally:
        col.close()
    return final, col


def test_scanimage_tiff_streams_equal_offline_per_channel_and_plane(tmp_path, cfg_factory):
    """Two channels x two planes: ScanImage numbers every plane as a frame (frame_step 2), nothing is 'dropped'."""
    from livedenoise.io.scanimage_tiff import write_scanimage_tiff

    rng = np.random.default_rng(5)
    data = rng.integers(0, 400, (10, 2, 2, 16, 24)).astype(np.int16)  # (t, z, c, H, W)
    path = write_scanimage_tiff(tmp_path / "scan.tif", data, channels=(1, 2), frame_rate=120.0)
    model = make_checkpoint(tmp_path / "m.pt", pre=2, post=1, seed=7)
    final, col = _replay_scanimage(cfg_factory(model=str(model), max_batch=4), path, 40)
    assert final["frames_in"] == 40 and final["frames_out"] == 40
    assert final["dropped_upstream"] == 0 and final["restarts"] == 0
    for ch in (1, 2):
        for z in (1, 2):
            got = [f for f in col.frames() if f.header.stream == (ch, z)]
            assert [f.header.frame for f in got] == [t * 2 + z for t in range(10)]
            out = tmp_path / f"off_{ch}_{z}.h5"
            denoise_file(path, out, model, out_dtype="float32", progress=False, norm="card", channel=ch, plane=z)
            with h5py.File(out, "r") as f:
                ref = np.asarray(f["data"] if "data" in f else f[list(f.keys())[0]])
            np.testing.assert_allclose(np.stack([f.pixels for f in got]), ref, rtol=1e-5, atol=1e-3)


# ---------------------------------------------------------------- acquisitions that end mid-window, restart, have gaps
def _serve(cfg, plan, n_frames):
    """Run a service, send `plan` (ending with a `stop`) from a test microscope; (final stats, output frames)."""
    svc = RunningService(cfg)
    col = Collector(cfg.output)
    pub = RawPublisher(cfg.input)
    try:
        assert col.wait_for(lambda m: getattr(m, "topic", "") == "stats"), "no stats from the service"
        pub.wait_subscriber()
        for parts in plan:
            pub.send(parts)
        assert col.wait_for(lambda m: getattr(m, "topic", "") == "stop"), "no stop forwarded"
        assert svc.wait_frames_in(n_frames), f"frames_in {svc.service.stats.frames_in}"
        svc.wait_idle()
        final = svc.stop()
    finally:
        pub.close()
        col.close()
        if svc.thread.is_alive():
            svc.stop()
    return final, col.frames()


def _frames(k0, mov):
    return [frame_parts(int(k), mov[i]) for i, k in enumerate(k0)]


@pytest.mark.parametrize("arch,post,innovation_k", [("interp2d", 0, None), ("interp2d", 1, None), ("cad3d", 1, None),
                                                    ("interp2d", 0, 1.0), ("interp2d", 1, 1.0)],
                         ids=["causal", "lag1", "cad3d-lag1", "causal+innovation", "lag1+innovation"])
def test_short_restarted_and_gapped_acquisitions_equal_offline(tmp_path, cfg_factory, arch, post, innovation_k):
    """Acquisition 1 stops mid-window (13 frames); 2 is cut by a counter falling back (15 frames); 3 has a gap
    (frames 0..9, 12..21). Each comes out equal to offline denoising of the same frames with the same counters,
    and what follows the gap equals offline denoising of those frames alone (no earlier frame is an input)."""
    from livedenoise.models.innovation import step_for

    rng = np.random.default_rng(11)
    movs = [np.clip(100 + rng.normal(0, 15, (n, 24, 32)) + np.linspace(0, 30, n)[:, None, None], 0, 3e4).astype(np.int16)
            for n in (13, 15, 20)]
    counters3 = np.r_[np.arange(10), np.arange(12, 22)]
    model = make_checkpoint(tmp_path / "m.pt", pre=3, post=post, seed=post, arch=arch)
    cfg = cfg_factory(model=str(model), record=str(tmp_path / "rec"), max_batch=3, innovation_k=innovation_k)
    plan = [encode_control("start", {"frame_rate": 30})] + _frames(range(13), movs[0]) + [encode_control("stop", {})]
    plan += _frames(range(100, 115), movs[1]) + _frames(counters3, movs[2]) + [encode_control("stop", {})]
    final, _ = _serve(cfg, plan, 48)
    assert final["frames_in"] == final["frames_out"] == 48
    assert final["restarts"] == 1 and final["dropped_upstream"] == 2 and final["gaps"] == 1
    assert final["overflow"] == final["skipped"] == final["too_short"] == 0
    eng = TorchEngine.from_checkpoint(model)
    step = step_for(eng.card, False, innovation_k)[0]
    refs = [denoise_array(eng, movs[0], innovation=step), denoise_array(eng, movs[1], innovation=step),
            denoise_array(eng, movs[2], counters=counters3, innovation=step)]
    numbers = [np.arange(13), np.arange(100, 115), counters3]
    for n, (ref, frame_no) in enumerate(zip(refs, numbers), start=1):
        den = read_recording(tmp_path / "rec" / f"denoised_c1_p1_a00{n}.h5")
        np.testing.assert_array_equal(den["frame"], frame_no)
        np.testing.assert_allclose(den["frames"], ref, rtol=1e-5, atol=1e-5 * float(np.abs(ref).max()))
        if n == 3:
            alone = denoise_array(eng, movs[2][10:], innovation=step)
            np.testing.assert_allclose(den["frames"][10:], alone, rtol=1e-5, atol=1e-5 * float(np.abs(alone).max()))
    raw = read_recording(tmp_path / "rec" / "raw_c1_p1_a003.h5")
    np.testing.assert_array_equal(raw["frame"], counters3)  # the raw recording holds exactly what was received
    # `livedenoise denoise` of each raw recording reads its frame numbers and gives the live denoised file
    for n in (1, 2, 3):
        out = tmp_path / f"offline_a00{n}.h5"
        denoise_file(tmp_path / "rec" / f"raw_c1_p1_a00{n}.h5", out, model, out_dtype="float32", progress=False, norm="card",
                     innovation_k=innovation_k)
        with h5py.File(out, "r") as f:
            offline = np.asarray(f["data"])
        live = read_recording(tmp_path / "rec" / f"denoised_c1_p1_a00{n}.h5")["frames"]
        np.testing.assert_allclose(offline, live, rtol=1e-5, atol=1e-5 * float(np.abs(live).max()))


def test_a_scanimage_file_with_a_dropped_frame_is_split_as_live(tmp_path, cfg_factory):
    """ScanImage frameNumbers with a hole (frame 7 of a 2-plane volume series never logged): replayed live and
    denoised offline, the file is split at the same gap: same output, and nothing after the gap reads before it."""
    from livedenoise.io.scanimage_tiff import write_scanimage_tiff

    rng = np.random.default_rng(8)
    data = rng.integers(0, 400, (12, 2, 1, 16, 24)).astype(np.int16)  # (t, z, c, H, W)
    numbers = (np.arange(12)[:, None] * 2 + np.arange(1, 3)[None, :]).astype(np.int64)
    numbers[6:] += 2  # one volume (two frames) lost between volume 5 and 6
    path = write_scanimage_tiff(tmp_path / "scan.tif", data, frame_numbers=numbers, frame_rate=60.0)
    model = make_checkpoint(tmp_path / "m.pt", pre=2, post=1, seed=3)
    final, col = _replay_scanimage(cfg_factory(model=str(model), max_batch=4), path, 24)
    assert final["frames_out"] == 24 and final["gaps"] == 2  # one gap in each plane's stream
    eng = TorchEngine.from_checkpoint(model)
    for z in (1, 2):
        got = np.stack([f.pixels for f in col.frames() if f.header.stream == (1, z)])
        out = tmp_path / f"off_{z}.h5"
        denoise_file(path, out, model, out_dtype="float32", progress=False, norm="card", plane=z)
        with h5py.File(out, "r") as f:
            offline = np.asarray(f["data"])
        np.testing.assert_allclose(got, offline, rtol=1e-5, atol=1e-3)
        plane = data[:, z - 1, 0].astype(np.float32)
        np.testing.assert_allclose(offline[6:], denoise_array(eng, plane[6:]), rtol=1e-5, atol=1e-3)


def test_a_six_frame_acquisition_follows_the_one_length_rule(tmp_path, cfg_factory, caplog):
    """serve agrees with train and denoise on a 6-frame movie: interp2d (window of 9) denoises it as offline does;
    cad3d pre 5 post 1 (min_frames 8, which denoise and train refuse) passes it through raw, flagged, with one warning."""
    from livedenoise.errors import UserError
    from livedenoise.models.registry import min_frames

    six = np.random.default_rng(12).normal(100, 15, (6, 24, 32)).astype(np.int16)
    results = {}
    for arch, pre in (("interp2d", 8), ("cad3d", 5)):
        model = make_checkpoint(tmp_path / f"{arch}.pt", pre=pre, post=1, arch=arch)
        cfg = cfg_factory(model=str(model), max_batch=4)
        with caplog.at_level("WARNING", logger="livedenoise.stream"):
            final, frames = _serve(cfg, [encode_control("start", {})] + _frames(range(6), six)
                                   + [encode_control("stop", {})], 6)
        results[arch] = (final, frames, TorchEngine.from_checkpoint(model))
    final, frames, eng = results["interp2d"]
    assert final["frames_out"] == 6 and final["too_short"] == 0
    ref = denoise_array(eng, six)
    np.testing.assert_allclose(np.stack([f.pixels for f in frames]), ref, rtol=1e-5, atol=1e-3)
    final, frames, eng = results["cad3d"]
    assert min_frames(eng.card) == 8
    assert final["frames_out"] == final["passthrough"] == final["too_short"] == 6
    assert all(f.header.extra.get("passthrough") for f in frames)
    np.testing.assert_array_equal(np.stack([f.pixels for f in frames]), six.astype(np.float32))
    assert len([r for r in caplog.records if "minimum of 8 frames" in r.getMessage()]) == 1
    with pytest.raises(UserError, match="has 6 frames but this cad3d model needs at least 8"):
        denoise_array(eng, six)


def test_slow_renormalisation_live_equals_offline(tmp_path, movie, cfg_factory):
    movie_path, mov = movie
    model = make_checkpoint(tmp_path / "m.pt", pre=3, post=1, seed=3)
    cfg = cfg_factory(model=str(model), renorm=10, renorm_rate=0.5, max_batch=4)
    svc = RunningService(cfg)
    col = Collector(cfg.output)
    try:
        assert col.wait_for(lambda m: getattr(m, "topic", "") == "stats")
        replay_movie(movie_path, cfg.input, fps=100, wait_s=20)
        assert col.wait_for(lambda m: getattr(m, "topic", "") == "stop", timeout=60)
        svc.stop()
    finally:
        col.close()
    frames = col.frames()
    assert len(frames) == 40
    out = tmp_path / "slow.h5"
    denoise_file(movie_path, out, model, out_dtype="float32", progress=False, norm="data", renorm=10, renorm_rate=0.5,
                 batch=5)
    with h5py.File(out, "r") as f:
        offline = np.asarray(f["data"])
    np.testing.assert_allclose(np.stack([fr.pixels for fr in frames]), offline, rtol=1e-5, atol=1e-3)
    # and it is not the first-10-frames normalisation (the movie drifts by +30 over its 40 frames)
    first_only = tmp_path / "first.h5"
    denoise_file(movie_path, first_only, model, out_dtype="float32", progress=False, norm="data", renorm=10, batch=5)
    with h5py.File(first_only, "r") as f:
        assert not np.allclose(np.asarray(f["data"])[30:], offline[30:], atol=1e-2)
