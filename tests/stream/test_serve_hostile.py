"""One test per kind of hostile input or fault, each against a real service on loopback (real PUB/SUB sockets,
real recording files; `serve` itself as a subprocess where the exit status matters):

- single hostile messages (deep headers, 5000-digit integers, frame = 2**63, channel beyond its range,
  NaN, a huge shape, a `start` of protocol version 2): counted as malformed, reception and recording go on;
- many distinct streams: open files bounded, every frame recorded (in part files); too many open streams:
  the least recently used is closed, every frame still recorded;
- frame-number jumps (19 -> 10**9) and resets under --policy latest and all: a new acquisition, no
  millions counted, nothing hangs; a small gap is still a gap;
- thread health: a pipeline that raises once, a receiver loop that fails once (restarted), a receiver
  or engine loop that cannot go on (the service stops, `serve` exits 1 with one line).
"""

import json
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from streamkit import (  # noqa: F401
    MeanEngine, RawPublisher, RunningService, cfg_factory, endpoints, frame_parts, lite_card, make_checkpoint,
    raw_frames_recorded, read_stream_safe,
)

from livedenoise.stream.pipeline import FramePipeline
from livedenoise.stream.service import ServiceFailed, Service
from livedenoise.stream.sinks.recorder import read_recording, read_stream
from livedenoise.stream.sources.frames import FrameReceiver
from livedenoise.stream.stats import stats_line


def img(k, shape=(4, 6)):
    return np.full(shape, k % 30000, np.int16)


class Session:
    """A service in a thread with a raw publisher on loopback; `.finish()` sends stop and returns the final stats."""

    def __init__(self, cfg, engine=None, service_cls=Service):
        self.svc = RunningService(cfg, engine or MeanEngine(lite_card(2, 0)), service_cls=service_cls)
        self.pub = RawPublisher(cfg.input)
        self.pub.wait_subscriber()
        self.n = 0  # messages delivered (frames + malformed)

    def frames(self, numbers, **kw):
        for k in numbers:
            self.pub.send(frame_parts(k, img(k), **kw))
            self.n += 1

    def send(self, parts, counted=True):
        self.pub.send(parts)
        self.n += counted

    def sync(self):
        assert self.svc.wait_messages(self.n, timeout=60), "serve stopped receiving"

    def finish(self, stop=True):
        try:
            if stop:
                self.pub.control("stop")
            self.sync()
            self.svc.wait_idle(60)
            return self.svc.stop()
        finally:
            self.close()

    def close(self):
        self.pub.close()
        if self.svc.thread.is_alive():
            self.svc.stop_event.set()
            self.svc.thread.join(60)


def _hdr(**kw):
    h = {"v": 1, "frame": 5, "t": 0.1, "shape": [4, 6], "dtype": "int16", "channel": 1, "plane": 1}
    h.update(kw)
    return json.dumps(h).encode()


PAYLOAD = b"\0" * 48
HOSTILE = {
    "deep frame header": [b"frame", b'{"frame": 5, "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", PAYLOAD],
    "deep but small frame header": [b"frame", b'{"frame": 5, "x": ' + b"[" * 30_000 + b"]" * 30_000 + b"}", PAYLOAD],
    "deep start": [b"start", b'{"v": 1, "x": ' + b"{\"a\":" * 50_000 + b"1" + b"}" * 50_000 + b"}"],
    "5000-digit frame": [b"frame", _hdr().replace(b'"frame": 5', b'"frame": ' + b"7" * 5000), PAYLOAD],
    "5000-digit start field": [b"start", b'{"v": 1, "frames": ' + b"7" * 5000 + b"}"],
    "frame 2**63": [b"frame", _hdr(frame=2**63), PAYLOAD],
    "frame 2**62 + 1": [b"frame", _hdr(frame=2**62 + 1), PAYLOAD],
    "channel 2**64": [b"frame", _hdr(channel=2**64), PAYLOAD],
    "channel 65": [b"frame", _hdr(channel=65), PAYLOAD],
    "plane 5000": [b"frame", _hdr(plane=5000), PAYLOAD],
    "t NaN": [b"frame", _hdr().replace(b'"t": 0.1', b'"t": NaN'), PAYLOAD],
    "huge shape, no payload": [b"frame", _hdr(shape=[32768, 32768]), b""],
    "start v 2": [b"start", b'{"v": 2, "frame_rate": 30}'],
    "stop v 2": [b"stop", b'{"v": 2}'],
    "start frame_step 0": [b"start", b'{"v": 1, "frame_step": 0}'],
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_hostile_message_is_counted_and_reception_and_recording_go_on(tmp_path, cfg_factory, name):
    s = Session(cfg_factory(record=str(tmp_path / "rec")))
    try:
        s.frames(range(5))
        s.send(HOSTILE[name])
        s.frames(range(5, 10))
        final = s.finish()
    finally:
        s.close()
    assert final["malformed"] == 1 and final["frames_in"] == 10 and final["frames_out"] == 10
    assert final["last_malformed"]  # with its reason
    assert final["restarts"] == final["jumps"] == 0  # a refused start/stop changed nothing: one acquisition
    assert final["threads"]["receiver"]["errors"] == 0 and final["threads"]["receiver"]["state"] == "stopped"
    raw = read_recording(tmp_path / "rec" / "raw_c1_p1_a001.h5")
    assert list(raw["frame"]) == list(range(10)) and [int(f[0, 0]) for f in raw["frames"]] == list(range(10))
    assert list(read_recording(tmp_path / "rec" / "denoised_c1_p1_a001.h5")["frame"]) == list(range(10))


def test_many_distinct_streams_keep_open_files_bounded_and_are_all_recorded(tmp_path, cfg_factory):
    cfg = cfg_factory(record=str(tmp_path / "rec"), record_max_open=6)
    open_seen = []
    s = Session(cfg)
    streams = [(ch, pl) for ch in range(10) for pl in (1, 2, 3)]  # 30 streams, 60 files (raw + denoised)
    try:
        for k in range(6):
            for ch, pl in streams:
                s.pub.send(frame_parts(k, img(100 * ch + 10 * pl + k), channel=ch, plane=pl))
                s.n += 1
            s.sync()
            open_seen.append(s.svc.service.stats.record_files_open)
        final = s.finish()
    finally:
        s.close()
    rec = s.svc.service.recorder
    assert final["frames_in"] == 180 and final["frames_out"] == 180 and final["record_dropped"] == 0
    assert rec.max_open_seen <= 6 and max(open_seen) <= 6 and final["record_files_open"] == 0
    assert all(x["record_files_open"] <= 6 for x in s.svc.stats)
    for ch, pl in streams:
        raw = read_stream(tmp_path / "rec", "raw", ch, pl, 1)
        assert list(raw["frame"]) == list(range(6))
        assert [int(f[0, 0]) for f in raw["frames"]] == [100 * ch + 10 * pl + k for k in range(6)]
        assert list(read_stream(tmp_path / "rec", "denoised", ch, pl, 1)["frame"]) == list(range(6))
    assert raw["parts"] > 1  # it did continue in part files
    assert not list((tmp_path / "rec").glob("*.partial.*"))


def test_more_streams_than_max_streams_closes_the_least_recently_used_and_records_everything(tmp_path, cfg_factory):
    s = Session(cfg_factory(record=str(tmp_path / "rec"), max_streams=3))
    try:
        for rnd in range(2):
            for ch in range(6):
                s.frames(range(10 * rnd, 10 * rnd + 10), channel=ch)
                s.sync()
        final = s.finish()
    finally:
        s.close()
    assert final["frames_in"] == 120 and final["evicted"] > 0 and final["malformed"] == 0
    got = raw_frames_recorded(tmp_path / "rec")
    assert sum(got.values()) == 120
    assert {(k[0], k[2]) for k in got} == {(ch, f) for ch in range(6) for f in range(20)}


@pytest.mark.parametrize("policy", ["latest", "all"])
def test_a_frame_number_jump_starts_a_new_acquisition_without_counting_millions(tmp_path, cfg_factory, policy):
    big = 10**9
    s = Session(cfg_factory(record=str(tmp_path / "rec"), policy=policy, ring=32))
    try:
        s.frames(range(20))
        s.frames(range(big, big + 10))  # beyond the ring's 32 frames: a new acquisition
        s.frames(range(big + 15, big + 20))  # 5 missing: a gap within the ring's reach
        s.frames([2**61])  # and once more, far
        s.sync()
        s.frames(range(2**61 + 1, 2**61 + 4))
        s.frames(range(3, 7))  # a reset: the counter falls back
        final = s.finish()
    finally:
        s.close()
    assert final["frames_in"] == 20 + 15 + 4 + 4
    assert final["jumps"] == 2 and final["restarts"] == 1
    assert final["dropped_upstream"] == 5 and final["gaps"] == 1
    assert final["skipped"] <= final["frames_in"] and final["overflow"] == 0
    assert final["frames_out"] + final["skipped"] == final["frames_in"]
    if policy == "all":
        assert final["skipped"] == 0
    rec = tmp_path / "rec"
    assert list(read_recording(rec / "raw_c1_p1_a001.h5")["frame"]) == list(range(20))
    assert list(read_recording(rec / "raw_c1_p1_a002.h5")["frame"]) == list(range(big, big + 10)) + list(
        range(big + 15, big + 20))
    assert list(read_recording(rec / "raw_c1_p1_a003.h5")["frame"]) == list(range(2**61, 2**61 + 4))
    assert list(read_recording(rec / "raw_c1_p1_a004.h5")["frame"]) == list(range(3, 7))


def test_frame_step_from_start_scales_the_ring_reach(tmp_path, cfg_factory):
    s = Session(cfg_factory(record=str(tmp_path / "rec"), ring=16))
    try:
        s.send([b"start", b'{"v": 1, "frame_step": 3}'], counted=False)
        s.frames(range(1, 31, 3))          # 1, 4, ... 28
        s.frames(range(28 + 3 * 11, 28 + 3 * 14, 3))  # 10 frames missing: within 16 frames of reach: a gap
        s.frames([1 + 3 * 10**6])          # far beyond, on the grid: a new acquisition
        final = s.finish()
    finally:
        s.close()
    assert final["dropped_upstream"] == 10 and final["gaps"] == 1 and final["jumps"] == 1 and final["malformed"] == final["restarts"] == 0


# ---------------------------------------------------------------- thread health
class FaultyPipeline(FramePipeline):
    """Raises once when frame 5 is pushed and once when the engine loop collects for the first time after it."""

    push_fault = {"armed": True}
    collect_fault = {"armed": True}

    def push(self, frame, counter=None, t=0.0, arrival=0.0):
        if counter == 5 and self.push_fault["armed"]:
            self.push_fault["armed"] = False
            raise RuntimeError("injected push fault")
        return super().push(frame, counter, t, arrival)

    def collect(self, policy="all", full=False):
        if self.next_out > 8 and self.collect_fault["armed"]:
            self.collect_fault["armed"] = False
            raise RuntimeError("injected collect fault")
        return super().collect(policy, full)


class FaultyPipelineService(Service):
    def _make_pipeline(self, shape, dtype, step, name):
        return FaultyPipeline(self.engine, shape, dtype, capacity=self.cfg.ring, max_batch=self.cfg.max_batch,
                              step=step, name=name, stats=self.stats, batch=self._batch)


def test_a_pipeline_that_raises_once_is_counted_in_thread_health_and_frames_keep_flowing(tmp_path, cfg_factory):
    FaultyPipeline.push_fault["armed"] = FaultyPipeline.collect_fault["armed"] = True
    s = Session(cfg_factory(record=str(tmp_path / "rec"), stats_interval=0.1), service_cls=FaultyPipelineService)
    try:
        s.frames(range(20))
        s.sync()
        s.svc.wait_idle(60)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(
                x["threads"]["receiver"]["errors"] and x["threads"]["engine"]["errors"] for x in list(s.svc.stats)):
            time.sleep(0.05)
        s.frames(range(20, 30))
        final = s.finish()
    finally:
        s.close()
    shown = [x for x in s.svc.stats if x["threads"]["receiver"]["errors"]]
    assert shown and "injected push fault" in shown[-1]["threads"]["receiver"]["last_error"]
    assert any("injected collect fault" in x["threads"]["engine"]["last_error"] for x in s.svc.stats)
    assert "receiver running: 1 error(s), 1 restart(s)" in stats_line(shown[-1])
    rx, eng = final["threads"]["receiver"], final["threads"]["engine"]
    assert rx["errors"] == rx["restarts"] == 1 and rx["state"] == "stopped"
    assert eng["errors"] == eng["restarts"] == 1 and eng["state"] == "stopped"
    assert final["frames_in"] == 30 and final["malformed"] == 0
    raw = read_recording(tmp_path / "rec" / "raw_c1_p1_a001.h5")
    assert list(raw["frame"]) == list(range(30))  # frame 5 too: raw data is recorded whatever the pipeline does
    den = list(read_recording(tmp_path / "rec" / "denoised_c1_p1_a001.h5")["frame"])
    assert den == [k for k in range(30) if k != 5] and final["frames_out"] == 29  # the collect was retried


class FlakyReceiver(FrameReceiver):
    """Its loop fails `fails` times (as a broken socket would), then works."""

    fails = 1

    def _body(self):
        if self.fails:
            self.fails -= 1
            raise OSError("injected receiver loop fault")
        super()._body()


class FlakyReceiverService(Service):
    fails = 1

    def _make_receiver(self):
        rx = FlakyReceiver(self.sub, self.table, self.stats, self._recv_stop, on_fatal=self._on_fatal,
                           max_restarts=self.cfg.max_restarts)
        rx.fails = self.fails
        return rx


def test_a_receiver_loop_that_fails_is_restarted_and_the_stats_show_it(tmp_path, cfg_factory):
    s = Session(cfg_factory(record=str(tmp_path / "rec"), stats_interval=0.1), service_cls=FlakyReceiverService)
    try:
        s.frames(range(12))
        final = s.finish()
    finally:
        s.close()
    rx = final["threads"]["receiver"]
    assert rx["restarts"] == 1 and rx["errors"] == 1 and "injected receiver loop fault" in rx["last_error"]
    assert final["frames_in"] == 12 and "fatal" not in final
    assert list(read_recording(tmp_path / "rec" / "raw_c1_p1_a001.h5")["frame"]) == list(range(12))


class DeadReceiverService(FlakyReceiverService):
    fails = 10**9


class DeadEngineLoopService(Service):
    def _emit_stats(self):
        raise RuntimeError("injected stats fault")


@pytest.mark.parametrize("service_cls, thread", [(DeadReceiverService, "receiver"), (DeadEngineLoopService, "engine")])
def test_a_thread_that_cannot_go_on_stops_the_service_with_one_line(tmp_path, cfg_factory, service_cls, thread):
    cfg = cfg_factory(record=str(tmp_path / "rec"), max_restarts=2, stats_interval=0.05)
    svc = RunningService(cfg, MeanEngine(lite_card(2, 0)), service_cls=service_cls)
    svc.thread.join(60)
    assert not svc.thread.is_alive(), "the service stayed up with a dead thread"
    assert isinstance(svc.error, ServiceFailed)
    line = str(svc.error)
    assert "\n" not in line and "cannot go on" in line and "injected" in line
    final = svc.error.final
    assert final["fatal"] == line and final["threads"][thread]["state"] == "failed"
    assert final["threads"][thread]["restarts"] == 2


# ---------------------------------------------------------------- `serve` as a user runs it
@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("hostile") / "m.pt", pre=3, post=1)


def _serve(*args):
    return subprocess.Popen([sys.executable, "-m", "livedenoise", "serve", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_serve_policy_latest_with_a_huge_jump_neither_hangs_nor_counts_millions(tmp_path, model):
    i, o = endpoints()
    serve = _serve("--model", model, "--input", i, "--output", o, "--policy", "latest", "--json", "--quiet",
                   "--record", tmp_path / "rec")
    pub = RawPublisher(i)
    try:
        pub.wait_subscriber(timeout=120)
        for k in list(range(20)) + list(range(10**9, 10**9 + 20)):
            pub.send(frame_parts(k, img(k, (16, 16))))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(read_stream_safe(tmp_path / "rec")) < 40:
            time.sleep(0.1)
    finally:
        pub.close()
        serve.send_signal(signal.SIGINT)
        out, err = serve.communicate(timeout=120)
    assert serve.returncode == 0, err
    final = json.loads(out.strip().splitlines()[-1])
    assert final["frames_in"] == 40 and final["jumps"] == 1 and final["dropped_upstream"] == 0
    assert final["skipped"] + final["frames_out"] == 40
    assert sorted(read_stream_safe(tmp_path / "rec")) == list(range(20)) + list(range(10**9, 10**9 + 20))


_DEAD_RECEIVER = textwrap.dedent("""
    import sys
    import livedenoise.stream.service as service
    from livedenoise.stream.sources.frames import FrameReceiver

    class Dead(FrameReceiver):
        def _body(self):
            raise OSError("injected: the socket is gone")

    service.FrameReceiver = Dead
    from livedenoise.cli import main
    raise SystemExit(main(sys.argv[1:]))
""")


def test_serve_exits_non_zero_with_one_line_when_reception_cannot_go_on(model):
    i, o = endpoints()
    r = subprocess.run([sys.executable, "-c", _DEAD_RECEIVER, "serve", "--model", model, "--input", i, "--output", o,
                        "--json"], capture_output=True, text=True, timeout=180)
    assert r.returncode == 1, (r.stdout, r.stderr)
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("livedenoise serve: error: ") and "cannot go on" in last and "socket is gone" in last
    final = json.loads(r.stdout.strip().splitlines()[-1])
    assert final["final"] and final["threads"]["receiver"]["state"] == "failed" and final["fatal"]
