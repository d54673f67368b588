"""The service stays up and counts every fault: malformed messages, dropped frames, restarts, slow sinks and engines."""

import json
import threading
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from streamkit import MeanEngine, RawPublisher, RunningService, cfg_factory, frame_parts, lite_card  # noqa: F401

from livedenoise.stream.protocols.frames import DTYPES, ProtocolError, decode
from livedenoise.stream.pipeline import FramePipeline
from livedenoise.stream.sources.frames import FrameReceiver, StreamTable
from livedenoise.stream.sinks.recorder import read_recording
from livedenoise.stream.stats import ServiceStats

# ---------------------------------------------------------------- malformed message strategies
_dtype = st.sampled_from(sorted(DTYPES))
_shape = st.tuples(st.integers(1, 6), st.integers(1, 6))


def _hdr(**kw):
    h = {"v": 1, "frame": 5, "t": 0.1, "shape": [2, 3], "dtype": "int16", "channel": 1, "plane": 1}
    h.update(kw)
    return json.dumps(h).encode()


@st.composite
def wrong_payload(draw):
    shp, dt = draw(_shape), draw(_dtype)
    need = shp[0] * shp[1] * DTYPES[dt].itemsize
    size = draw(st.integers(0, need + 16).filter(lambda n: n != need))
    return [b"frame", _hdr(shape=list(shp), dtype=dt), b"\1" * size]


_bad_field = st.one_of(
    st.builds(lambda v: _hdr(frame=v), st.one_of(st.integers(max_value=-1), st.integers(min_value=2**62 + 1), st.text(max_size=3), st.none(),
                                                  st.floats(allow_nan=False).filter(lambda f: not f.is_integer()))),  # 5.0 is a valid 5
    st.builds(lambda v: _hdr(shape=v), st.one_of(st.lists(st.integers(-2, 4), max_size=4).filter(lambda s: not (len(s) == 2 and min(s) > 0)), st.text(max_size=4))),
    st.builds(lambda v: _hdr(dtype=v), st.text(max_size=8).filter(lambda s: s not in DTYPES)),
    st.builds(lambda v: _hdr(order=v), st.text(max_size=3).filter(lambda s: s not in ("C", "F"))),
    st.builds(lambda v: _hdr(v=v), st.integers(2, 99)),
    st.builds(lambda v: _hdr(t=v), st.one_of(st.text(max_size=3), st.booleans(), st.lists(st.integers(), max_size=2))),
    st.builds(lambda v: _hdr(channel=v), st.one_of(st.integers(max_value=-1), st.text(max_size=2))),
)

malformed = st.one_of(
    wrong_payload(),
    _bad_field.map(lambda h: [b"frame", h, b"\0" * 12]),
    st.binary(max_size=40).map(lambda b: [b"frame", b"\xff" + b, b"\0" * 12]),            # not UTF-8 JSON
    st.sampled_from([b"[]", b"3", b'"x"', b"null"]).map(lambda h: [b"frame", h, b""]),   # JSON but not an object
    st.lists(st.binary(max_size=12), max_size=5).filter(lambda p: len(p) != 2).map(lambda p: [b"frame", *p]),
    st.sampled_from([b"start", b"stop"]).map(lambda t: [t, b"{bad", b""]),
    st.tuples(st.sampled_from([b"start", b"stop"]), st.binary(min_size=1, max_size=4)).map(lambda p: [p[0], b"{}", p[1]]),
    st.binary(min_size=1, max_size=6).map(lambda s: [b"frame" + s, _hdr(), b"\0" * 12]),  # passes the SUB filter
)


def _is_malformed(parts):
    try:
        decode(parts)
    except ProtocolError:
        return True
    return False


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(malformed, st.lists(st.binary(max_size=30), max_size=5)), max_size=12))
def test_receiver_counts_every_malformed_message_and_keeps_frames(messages):
    stats = ServiceStats()
    engine = MeanEngine(lite_card(2, 0))
    table = StreamTable(lambda shape, dtype, step, name: FramePipeline(engine, shape, dtype, capacity=16, step=step,
                                                                       name=name, stats=stats), stats)
    rx = FrameReceiver(None, table, stats, threading.Event())
    expected_bad = 0
    for k, parts in enumerate(messages):
        rx.handle(frame_parts(k, np.full((2, 3), k, np.int16)))
        expected_bad += _is_malformed(parts)
        if not _is_malformed(parts) and decode(parts).__class__.__name__ == "ControlMessage":
            continue  # an (accidentally) valid start/stop message is not a fault
        rx.handle(parts)
    assert stats.malformed == expected_bad
    assert stats.frames_in == len(messages)


# ---------------------------------------------------------------- over real sockets
def _send_and_wait(svc, pub, plan, expected_in):
    for parts in plan:
        pub.send(parts)
        time.sleep(0.001)
    assert svc.wait_frames_in(expected_in), f"frames_in {svc.service.stats.frames_in}"
    svc.wait_idle()


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.lists(malformed, min_size=1, max_size=4), min_size=3, max_size=3))
def test_service_survives_faults_and_records_every_valid_frame(tmp_path_factory, bad):
    tmp = tmp_path_factory.mktemp("robust")
    from streamkit import endpoints
    from livedenoise.stream.service import ServeConfig

    i, o = endpoints()
    cfg = ServeConfig(input=i, output=o, record=str(tmp / "rec"), stats_interval=0.2, ring=32)
    svc = RunningService(cfg, MeanEngine(lite_card(2, 0)))
    pub = RawPublisher(cfg.input)
    try:
        pub.wait_subscriber()
        img = lambda k, shape=(6, 8): np.full(shape, k, np.int16)  # noqa: E731
        plan = [[b"start", json.dumps({"v": 1, "frame_rate": 30}).encode()]]
        plan += [frame_parts(k, img(k)) for k in range(10)] + bad[0]
        plan += [frame_parts(k, img(k)) for k in range(12, 20)] + bad[1]          # 10 and 11 dropped upstream
        plan += [frame_parts(k, img(100 + k)) for k in range(0, 10)] + bad[2]     # publisher restart (no start)
        plan += [frame_parts(10, img(7, (4, 4)))]                                 # frame size change
        plan += [[b"stop", json.dumps({"v": 1}).encode()]]
        n_bad = sum(len(b) for b in bad)
        _send_and_wait(svc, pub, plan, 10 + 8 + 10 + 1)
        final = svc.stop()
    finally:
        pub.close()
        if svc.thread.is_alive():
            svc.stop()
    assert final["frames_in"] == 29
    assert final["malformed"] == n_bad
    assert final["dropped_upstream"] == 2
    assert final["restarts"] == 2
    assert final["frames_out"] == 29 and final["skipped"] == final["overflow"] == 0
    # raw: each acquisition's first frame (causal), frame 12 (first after the gap), the 1-frame acquisition (too short)
    assert final["passthrough"] == 4 and final["too_short"] == 1 and final["gaps"] == 1
    assert final["record_dropped"] == 0
    rec = tmp / "rec"
    a1, a2, a3 = (read_recording(rec / f"raw_c1_p1_a00{n}.h5") for n in (1, 2, 3))
    assert list(a1["frame"]) == list(range(10)) + list(range(12, 20))
    assert [int(f[0, 0]) for f in a1["frames"]] == list(range(10)) + list(range(12, 20))
    assert list(a2["frame"]) == list(range(10)) and int(a2["frames"][3, 0, 0]) == 103
    assert a3["frames"].shape == (1, 4, 4)
    d1 = read_recording(rec / "denoised_c1_p1_a001.h5")
    assert list(d1["frame"]) == list(range(10)) + list(range(12, 20))  # nothing is output for dropped frames
    # the gap starts a new segment: no frame before it (and nothing invented) is an input after it
    assert d1["frames"][10, 0, 0] == 12  # frame 12 has no past in its segment: passed through raw
    assert d1["frames"][11, 0, 0] == pytest.approx(12)  # frame 13 <- 12 (edge rule: nearest usable frame)
    assert d1["frames"][12, 0, 0] == pytest.approx((12 + 13) / 2)  # frame 14 <- 12, 13


def _stream(pub, n, shape=(16, 16), fps=None):
    t0 = time.perf_counter()
    for k in range(n):
        if fps:
            due = t0 + k / fps
            while time.perf_counter() < due:
                time.sleep(0.0005)
        pub.send(frame_parts(k, np.full(shape, k % 1000, np.int16)))


@pytest.mark.parametrize("policy", ["all", "latest"])
def test_slow_engine_batches_then_counts_skips_or_overflow(tmp_path, cfg_factory, policy):
    engine = MeanEngine(lite_card(2, 0), sleep_s=0.03)
    cfg = cfg_factory(policy=policy, max_batch=4, ring=16, record=str(tmp_path / "rec"))
    svc = RunningService(cfg, engine)
    pub = RawPublisher(cfg.input)
    try:
        pub.wait_subscriber()
        _stream(pub, 200, fps=500)  # ~130 frames/s is the engine's best (4 per 30 ms)
        pub.control("stop")
        assert svc.wait_frames_in(200), f"frames_in {svc.service.stats.frames_in}"
        svc.wait_idle()
        final = svc.stop()
    finally:
        pub.close()
    assert final["frames_in"] == 200 and final["malformed"] == 0
    assert max(engine.batch_sizes) == 4 and final["batches"] < 200  # it caught up in batches
    if policy == "all":
        assert final["skipped"] == 0 and final["overflow"] > 0
        assert final["frames_out"] + final["overflow"] == 200
    else:
        assert final["overflow"] == 0 and final["skipped"] > 0
        assert final["frames_out"] + final["skipped"] == 200
    raw = read_recording(tmp_path / "rec" / "raw_c1_p1_a001.h5")
    assert list(raw["frame"]) == list(range(200))  # every raw frame, denoised or not


def test_slow_engine_with_a_big_ring_denoises_every_frame(cfg_factory):
    engine = MeanEngine(lite_card(2, 0), sleep_s=0.02)
    cfg = cfg_factory(policy="all", max_batch=8, ring=256)
    svc = RunningService(cfg, engine)
    pub = RawPublisher(cfg.input)
    try:
        pub.wait_subscriber()
        _stream(pub, 150, fps=400)
        assert svc.wait_frames_in(150), f"frames_in {svc.service.stats.frames_in}"
        svc.wait_idle()
        final = svc.stop()
    finally:
        pub.close()
    assert final["frames_out"] == 150 and final["overflow"] == final["skipped"] == 0
    assert final["batches"] < 150


def test_a_consumer_that_never_reads_does_not_stall_the_service(cfg_factory):
    import zmq

    # a ring that holds all 300 frames: an engine pause under load costs no frame, so only a service that
    # waits on the consumer (a hang: the stop below fails) or loses frames fails the test
    cfg = cfg_factory(sndhwm=4, ring=512)
    svc = RunningService(cfg, MeanEngine(lite_card(2, 0)))
    ctx = zmq.Context()
    lazy = ctx.socket(zmq.SUB)
    lazy.setsockopt(zmq.SUBSCRIBE, b"")
    lazy.setsockopt(zmq.RCVHWM, 1)
    lazy.setsockopt(zmq.RCVBUF, 4096)
    lazy.connect(cfg.output)
    pub = RawPublisher(cfg.input)
    try:
        pub.wait_subscriber()
        time.sleep(0.2)
        _stream(pub, 300, shape=(128, 128), fps=1000)  # 32 KB frames: the lazy reader's buffers fill at once
        assert svc.wait_frames_in(300), f"frames_in {svc.service.stats.frames_in}"
        svc.wait_idle()
        final = svc.stop()
    finally:
        pub.close()
        lazy.close(linger=0)
        ctx.term()
    assert final["frames_in"] == 300 and final["frames_out"] == 300


def test_multiple_channels_and_planes_are_separate_streams(tmp_path, cfg_factory):
    cfg = cfg_factory(record=str(tmp_path / "rec"))
    svc = RunningService(cfg, MeanEngine(lite_card(2, 0)))
    pub = RawPublisher(cfg.input)
    try:
        pub.wait_subscriber()
        pub.control("start", frame_rate=30, channels=[1, 2], planes=2)
        for k in range(12):
            for ch in (1, 2):
                for pl in (1, 2):
                    pub.send(frame_parts(k, np.full((4, 6), 10 * ch + pl + k, np.int16), channel=ch, plane=pl))
        pub.control("stop")
        assert svc.wait_frames_in(48), f"frames_in {svc.service.stats.frames_in}"
        svc.wait_idle()
        final = svc.stop()
    finally:
        pub.close()
    assert final["frames_in"] == 48 and final["frames_out"] == 48 and final["restarts"] == 0
    for ch in (1, 2):
        for pl in (1, 2):
            den = read_recording(tmp_path / "rec" / f"denoised_c{ch}_p{pl}_a001.h5")
            assert list(den["frame"]) == list(range(12))
            assert den["frames"][5, 0, 0] == pytest.approx(10 * ch + pl + 3.5)  # mean of frames 3, 4


def test_frames_of_the_wrong_size_for_a_fixed_size_model_are_recorded_not_denoised(tmp_path, cfg_factory):
    card = lite_card(2, 0)
    card.frame_shape = [8, 8]
    cfg = cfg_factory(record=str(tmp_path / "rec"))
    svc = RunningService(cfg, MeanEngine(card))
    pub = RawPublisher(cfg.input)
    try:
        pub.wait_subscriber()
        for k in range(5):
            pub.send(frame_parts(k, np.full((6, 6), k, np.int16)))
        pub.control("stop")
        assert svc.wait_frames_in(5), f"frames_in {svc.service.stats.frames_in}"
        svc.wait_idle()
        final = svc.stop()
    finally:
        pub.close()
    assert final["frames_in"] == 5 and final["frames_out"] == 0 and final["engine_errors"] == 1
    assert list(read_recording(tmp_path / "rec" / "raw_c1_p1_a001.h5")["frame"]) == list(range(5))


def test_tiff_recording_holds_frames_numbers_and_times(tmp_path, cfg_factory):
    cfg = cfg_factory(record=str(tmp_path / "rec"), record_format="tiff")
    svc = RunningService(cfg, MeanEngine(lite_card(2, 0)))
    pub = RawPublisher(cfg.input)
    try:
        pub.wait_subscriber()
        for k in range(6):
            pub.send(frame_parts(k, np.full((4, 5), k, np.uint16), t=k * 0.5))
        pub.control("stop")
        assert svc.wait_frames_in(6), f"frames_in {svc.service.stats.frames_in}"
        svc.wait_idle()
        svc.stop()
    finally:
        pub.close()
    raw = read_recording(tmp_path / "rec" / "raw_c1_p1_a001.tif")
    assert raw["frames"].dtype == np.uint16 and [int(f[0, 0]) for f in raw["frames"]] == list(range(6))
    assert list(raw["frame"]) == list(range(6)) and list(raw["t"]) == [k * 0.5 for k in range(6)]
    den = read_recording(tmp_path / "rec" / "denoised_c1_p1_a001.tif")
    assert den["frames"].dtype == np.float32 and len(den["frames"]) == 6


def test_a_recorder_that_cannot_keep_up_says_so_in_the_stats(tmp_path, caplog):
    from livedenoise.stream.sinks.recorder import Recorder

    stats = ServiceStats()
    rec = Recorder(tmp_path / "rec", max_queue_mb=0.01, stats=stats)  # 10 KB of queue: a 16 KB frame never fits
    with caplog.at_level("WARNING", logger="livedenoise.stream"):
        ok = [rec.write("raw", 1, 1, 1, np.zeros((64, 128), np.int16), k, 0.0, 0.0) for k in range(3)]
        ok.append(rec.write("raw", 1, 1, 1, np.zeros((8, 8), np.int16), 3, 0.0, 0.0))
    rec.close()
    assert ok == [False, False, False, True]
    assert stats.record_dropped == 3 and rec.dropped == 3
    assert "recorder cannot keep up" in caplog.text
    assert list(read_recording(tmp_path / "rec" / "raw_c1_p1_a001.h5")["frame"]) == [3]
