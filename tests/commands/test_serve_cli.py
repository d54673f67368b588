"""`livedenoise serve` / `listen` as a user runs them: subprocesses, real sockets, one-line errors."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import zmq

from livedenoise.stream.loopback import free_port
from tests.stream.streamkit import endpoints, make_checkpoint, read_stream_safe


def cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "livedenoise", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def popen(*args):
    return subprocess.Popen([sys.executable, "-m", "livedenoise", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def one_line_error(r, verb, *words):
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"livedenoise {verb}: error: ")
    for w in words:
        assert w in lines[0], lines[0]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("serve") / "m.pt", pre=3, post=1)


@pytest.mark.parametrize("endpoint, words", [
    ("tcp://bad:x", ["--output"]),
    ("tcp://127.0.0.1:99999", ["port from 1 to 65535"]),
    ("nonsense", ["not a ZeroMQ endpoint"]),
])
def test_bad_output_endpoint_is_one_line(model, endpoint, words):
    one_line_error(cli("serve", "--model", model, "--output", endpoint, "--duration", 1), "serve", *words)


def test_bad_input_endpoint_is_one_line(model):
    one_line_error(cli("serve", "--model", model, "--input", "tcp://127.0.0.1:", "--duration", 1), "serve", "--input")


def test_output_port_in_use_is_one_line(model):
    ctx = zmq.Context()
    s = ctx.socket(zmq.PUB)
    port = free_port()
    s.bind(f"tcp://127.0.0.1:{port}")
    try:
        r = cli("serve", "--model", model, "--output", f"tcp://127.0.0.1:{port}", "--duration", 1)
    finally:
        s.close(linger=0)
        ctx.term()
    one_line_error(r, "serve", "already in use", "--output")


def test_missing_model_and_bad_options(tmp_path, model):
    one_line_error(cli("serve", "--model", tmp_path / "nope.pt", "--duration", 1), "serve", "does not exist")
    one_line_error(cli("serve", "--model", model, "--renorm", 500, "--ring", 64, "--duration", 1), "serve", "--ring")
    one_line_error(cli("serve", "--model", model, "--max-batch", 0), "serve", "--max-batch")
    one_line_error(cli("serve", "--model", model, "--innovation-k", -2, "--duration", 1), "serve", "innovation", "k must be >= 0")


def test_replay_serve_listen_end_to_end(tmp_path, model):
    i, o = endpoints()
    movie = np.random.default_rng(0).normal(100, 10, (30, 24, 32)).astype(np.int16)
    np.save(tmp_path / "movie.npy", movie)
    serve = popen("serve", "--model", model, "--input", i, "--output", o, "--record", tmp_path / "rec", "--json",
                  "--stats-interval", 0.5)
    listen = None
    try:
        listen = popen("listen", "--endpoint", o, "--json", "--timeout", 300, "--duration", 600)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(iter(listen.stdout.readline, "")), daemon=True)
        reader.start()
        deadline = time.monotonic() + 300  # listen is subscribed once it has seen one of serve's stats messages
        while not any('"stats"' in x for x in list(lines)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert any('"stats"' in x for x in lines), "listen never saw serve's stats"
        r = cli("replay", tmp_path / "movie.npy", "--endpoint", i, "--fps", 60, "--wait", 30, "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout.strip().splitlines()[-1])["frames"] == 30
        deadline = time.monotonic() + 120  # every frame denoised and received before the Ctrl-C
        while sum('"topic": "frame"' in x for x in list(lines)) < 30 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        serve.send_signal(signal.SIGINT)
        out, err = serve.communicate(timeout=60)
        if listen is not None:
            listen.send_signal(signal.SIGINT)
            listen.wait(30)
            reader.join(10)
            lout, lerr = "".join(lines), listen.stderr.read()
    assert serve.returncode == 0, err
    final = json.loads(out.strip().splitlines()[-1])
    assert final["final"] and final["frames_in"] == 30 and final["frames_out"] == 30
    assert final["dropped_upstream"] == final["malformed"] == 0
    assert sorted(os.listdir(tmp_path / "rec")) == ["denoised_c1_p1_a001.h5", "raw_c1_p1_a001.h5"]
    assert listen.returncode == 0, lerr
    lines = [json.loads(x) for x in lout.strip().splitlines()]
    frames = [x for x in lines if x.get("topic") == "frame"]
    assert [f["frame"] for f in frames] == list(range(30))
    assert all(f["dtype"] == "float32" and f["lag"] == 1 and "latency_ms" in f for f in frames)
    assert lines[-1]["summary"]["frames"] == 30


def test_listen_gives_up_when_nothing_arrives():
    r = cli("listen", "--endpoint", f"tcp://127.0.0.1:{free_port()}", "--timeout", 0.5)
    one_line_error(r, "listen", "nothing arrived")


def test_serve_duration_stops_and_prints_final_stats(model):
    i, o = endpoints()
    r = cli("serve", "--model", model, "--input", i, "--output", o, "--duration", 1)
    assert r.returncode == 0, r.stderr
    assert "final:" in r.stdout and "frames 0 in 0 out" in r.stdout


def test_sigterm_drains_flushes_and_prints_final_stats(tmp_path, model):
    from livedenoise.stream.sinks.recorder import read_recording

    i, o = endpoints()
    np.save(tmp_path / "movie.npy", np.full((12, 16, 16), 7, np.int16))
    serve = popen("serve", "--model", model, "--input", i, "--output", o, "--record", tmp_path / "rec", "--json",
                  "--quiet")
    try:
        r = cli("replay", tmp_path / "movie.npy", "--endpoint", i, "--fps", 100, "--wait", 60)
        assert r.returncode == 0, r.stderr
        # every frame received (the raw recording holds it) before the SIGTERM; the drain does the rest
        raw = tmp_path / "rec"
        deadline = time.monotonic() + 120
        while len(read_stream_safe(raw)) < 12 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        serve.send_signal(signal.SIGTERM)
        out, err = serve.communicate(timeout=60)
    assert serve.returncode == 0, err
    final = json.loads(out.strip().splitlines()[-1])
    assert final["final"] and final["frames_in"] == 12
    assert len(read_recording(tmp_path / "rec" / "raw_c1_p1_a001.h5")["frames"]) == 12
    assert len(read_recording(tmp_path / "rec" / "denoised_c1_p1_a001.h5")["frames"]) == final["frames_out"] == 12


def test_sigint_with_frames_queued_says_draining_at_once_then_what_it_gave_up(tmp_path, model):
    """Ctrl-C while the engine is behind: a `draining N queued frame(s)` line first, then the frames given up at
    the drain timeout (0 s here, so whatever is queued is given up), then the final line. Frames are kept queued
    by replaying in a loop far faster than the engine runs; the test waits for `queue N > 0` in the stats."""
    import re

    i, o = endpoints()
    np.save(tmp_path / "movie.npy", np.random.default_rng(0).normal(100, 10, (200, 128, 128)).astype(np.int16))
    serve = subprocess.Popen([sys.executable, "-m", "livedenoise", *map(str, (
                              "serve", "--model", model, "--input", i, "--output", o, "--max-batch", 1,
                              "--rcvhwm", 1000, "--stats-interval", 0.2, "--drain-timeout", 0))],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    replay = None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(serve.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        replay = subprocess.Popen([sys.executable, "-m", "livedenoise", *map(str, (
                                   "replay", tmp_path / "movie.npy", "--endpoint", i, "--fps", 2000, "--loop",
                                   "--wait", 120))],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 180
        queued = lambda: [int(m.group(1)) for x in list(lines) if (m := re.search(r"\| queue (\d+)", x))]  # noqa: E731
        # the newest stats line (0.2 s old at most) shows frames queued: far more than the engine denoises in
        # the moment before the signal, and the replay keeps adding more
        while not (queued() and queued()[-1] >= 32) and time.monotonic() < deadline and serve.poll() is None:
            time.sleep(0.01)
        assert queued() and queued()[-1] >= 32, "".join(lines)[-3000:]
        serve.send_signal(signal.SIGINT)
        serve.wait(120)
    finally:
        if serve.poll() is None:
            serve.kill()
        if replay is not None:
            replay.kill()
            replay.wait(30)
    reader.join(10)
    out = "".join(lines)
    assert serve.returncode == 0, out[-3000:]
    draining = [k for k, x in enumerate(lines) if "stopping: draining" in x]
    gave_up = [k for k, x in enumerate(lines) if "gave up" in x and "at the drain timeout (0 s)" in x]
    final = [k for k, x in enumerate(lines) if x.startswith("final: ")]
    assert draining and gave_up and final, out[-3000:]
    assert draining[0] < gave_up[0] < final[0]
    n_queued = int(re.search(r"draining (\d+) queued frame\(s\) \(at most 0 s; Ctrl-C again", lines[draining[0]]).group(1))
    n_given = int(re.search(r"gave up (\d+) queued frame", lines[gave_up[0]]).group(1))
    assert n_queued > 0 and n_given == n_queued
    assert f"gave up {n_given} queued frame(s) when stopping" in lines[final[0]]
