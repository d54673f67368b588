"""`livedenoise replay`: argument handling and one-line errors."""

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest

from tests.stream.streamkit import Collector, endpoints


def cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "livedenoise", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def one_line_error(r, *words):
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("livedenoise replay: error: ")
    for w in words:
        assert w in lines[0], lines[0]


def test_missing_movie(tmp_path):
    one_line_error(cli("replay", tmp_path / "nope.tif", "--wait", 0), "does not exist")


def test_unknown_format(tmp_path):
    (tmp_path / "movie.txt").write_text("x")
    one_line_error(cli("replay", tmp_path / "movie.txt", "--wait", 0), "unknown movie format")


def test_extra_positional_is_refused(tmp_path):
    np.save(tmp_path / "m.npy", np.zeros((3, 4, 4), np.int16))
    one_line_error(cli("replay", tmp_path / "m.npy", "other", "--wait", 0), "unexpected argument")


@pytest.mark.skipif(importlib.util.find_spec("livedenoise.stream.openephys") is not None,
                    reason="Open Ephys replay is installed")
def test_openephys_without_the_module_says_so(tmp_path):
    one_line_error(cli("replay", "openephys", tmp_path), "not available")


def test_bad_fps_and_port_in_use(tmp_path):
    np.save(tmp_path / "m.npy", np.zeros((3, 4, 4), np.int16))
    one_line_error(cli("replay", tmp_path / "m.npy", "--fps", 0, "--wait", 0), "--fps")
    one_line_error(cli("replay", tmp_path / "m.npy", "--endpoint", "tcp://127.0.0.1:0x", "--wait", 0), "--endpoint")


def test_replay_publishes_start_paced_frames_and_stop(tmp_path):
    movie = np.arange(20 * 4 * 6, dtype=np.uint16).reshape(20, 4, 6)
    np.save(tmp_path / "m.npy", movie)
    i, _ = endpoints()
    col = Collector(i)  # connects before the publisher binds: ZeroMQ reconnects by itself
    try:
        r = cli("replay", tmp_path / "m.npy", "--endpoint", i, "--fps", 40, "--wait", 30, "--json", "--channel", 2)
        assert r.returncode == 0, r.stderr
        assert col.wait_for(lambda m: getattr(m, "topic", "") == "stop")
    finally:
        col.close()
    summary = json.loads(r.stdout)
    assert summary["frames"] == 20 and summary["seconds"] > 19 / 40 * 0.8  # paced, never faster (slower: load)
    msgs = col.messages
    assert msgs[0][0].topic == "start" and msgs[0][0].meta["frame_rate"] == 40 and msgs[0][0].meta["frame_size"] == [4, 6]
    frames = [m for m, _ in msgs if hasattr(m, "header")]
    assert [f.header.frame for f in frames] == list(range(20))
    assert all(f.header.channel == 2 and f.header.dtype == "uint16" for f in frames)
    np.testing.assert_array_equal(np.stack([f.pixels for f in frames]), movie)
    times = np.array([t for m, t in msgs if hasattr(m, "header")])
    span = times[-1] - times[0]
    assert span > 19 / 40 * 0.8  # paced at 40 frames/s: never faster (a loaded machine may be slower)
    assert msgs[-1][0].topic == "stop"


@pytest.mark.skipif(importlib.util.find_spec("livedenoise.stream.openephys") is None,
                    reason="Open Ephys replay is not installed")
def test_openephys_needs_its_recording():
    one_line_error(cli("replay", "openephys", "--wait", 0), "needs the recording")


def test_replay_waits_for_every_subscriber_it_is_told_of(tmp_path):
    import threading
    import time

    movie = np.arange(5 * 4 * 6, dtype=np.uint16).reshape(5, 4, 6)
    np.save(tmp_path / "m.npy", movie)
    i, _ = endpoints()
    first = Collector(i)
    proc = subprocess.Popen([sys.executable, "-m", "livedenoise", "replay", tmp_path / "m.npy", "--endpoint", i,
                             "--fps", "100", "--wait", "300", "--subscribers", "2"], stdout=subprocess.PIPE, text=True)
    out: list[str] = []
    threading.Thread(target=lambda: out.extend(iter(proc.stdout.readline, "")), daemon=True).start()
    second = None
    try:
        deadline = time.monotonic() + 120
        while not any("waiting up to 300 s for 2 subscriber" in line for line in out) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert any("publishing m.npy" in line for line in out), out
        time.sleep(1.0)
        assert not first.messages, "published with one of the two subscribers"
        second = Collector(i)
        assert proc.wait(timeout=120) == 0
        for col in (first, second):
            assert col.wait_for(lambda m: getattr(m, "topic", "") == "stop", timeout=60)
            assert col.messages[0][0].topic == "start"
            assert [f.header.frame for f in col.frames()] == list(range(5))
    finally:
        if proc.poll() is None:
            proc.kill()
        first.close()
        if second is not None:
            second.close()
