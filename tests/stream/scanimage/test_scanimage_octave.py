"""The shipped ScanImage user functions, run for real under GNU Octave + JeroMQ.

Each test is one Octave process playing one acquisition (drive_acquisition.m)
through livedenoise_acqModeStart / _frameAcquired / _acqDone / _acqAbort with a
stand-in hSI; a pyzmq SUB socket checks what arrives.
"""

from __future__ import annotations

import numpy as np
import pytest

from octave_harness import expected_image, free_port, require_octave, run_acquisition


@pytest.fixture(scope="module")
def octave() -> str:
    return require_octave()


LINES, PIXELS = 24, 40  # non-square: a transpose changes the shape, the ramp catches flips


def check_frames(run, expected: list[tuple[int, int, int]], *, cls="int16", dt=1 / 30, lines=LINES, pixels=PIXELS):
    """Every (frame, channel, plane) arrives once, in order, with the right pixels and time."""
    got = [(m.header.frame, m.header.channel, m.header.plane) for m in run.frames]
    assert got == expected
    dtype = {"int16": "int16", "uint16": "uint16", "single": "float32"}[cls]
    for m in run.frames:
        h = m.header
        assert h.source == "scanimage" and h.dtype == dtype and h.shape == (lines, pixels)
        assert h.t == pytest.approx((h.frame - 1) * dt, abs=1e-12)
        want = expected_image(lines, pixels, h.frame, h.channel, h.plane, cls)
        np.testing.assert_array_equal(m.pixels, want)


def test_two_channels_arrive_oriented_with_gaps_start_and_stop(octave, tmp_path):
    frames = (1, 2, 3, 5, 6, 9)  # 4, 7, 8 skipped by the user function: gaps pass through
    run = run_acquisition(octave, tmp_path, channels=(1, 2), save=(1, 2), frames=frames)
    assert run.returncode == 0, run.stderr
    assert [type(m).__name__ for m in (run.messages[0], run.messages[-1])] == ["ControlMessage"] * 2
    (start,) = run.control("start")
    assert start.meta["source"] == "scanimage"
    assert start.meta["frame_rate"] == pytest.approx(30.0)
    assert start.meta["shape"] == [LINES, PIXELS]
    assert start.meta["channels"] == [1, 2]
    assert start.meta["planes"] == 1 and start.meta["frame_step"] == 1
    assert start.meta["zoom"] == pytest.approx(2.5)
    assert start.meta["dtype"] == "int16"
    check_frames(run, [(f, c, 1) for f in frames for c in (1, 2)])
    (stop,) = run.control("stop")
    assert stop.meta["reason"] == "done" and stop.meta["frames_sent"] == 12 and stop.meta["last_frame"] == 9
    assert run.warnings() == []


@pytest.mark.parametrize("cls", ["uint16", "single"])
def test_sample_types_map_to_protocol_dtypes(octave, tmp_path, cls):
    run = run_acquisition(octave, tmp_path, cls=cls, frames=(1, 2, 3))
    assert run.returncode == 0, run.stderr
    check_frames(run, [(f, 1, 1) for f in (1, 2, 3)], cls=cls)
    assert run.control("start")[0].meta["dtype"] == {"uint16": "uint16", "single": "float32"}[cls]


def test_fast_z_stack_one_event_per_plane(octave, tmp_path):
    # 3 planes, one frameAcquired per plane; frame 5 (volume 2, plane 2) skipped
    frames = (1, 2, 3, 4, 6, 7, 8, 9)
    run = run_acquisition(octave, tmp_path, channels=(1, 2), save=(1, 2), planes=3, frames=frames)
    assert run.returncode == 0, run.stderr
    start = run.control("start")[0].meta
    assert start["planes"] == 3 and start["z"] == [0, 20, 40] and start["frame_step"] == 3
    assert start["volume_rate"] == pytest.approx(10.0)
    check_frames(run, [(f, c, (f - 1) % 3 + 1) for f in frames for c in (1, 2)])


@pytest.mark.parametrize("zidx", [False, True])
def test_fast_z_flyback_frames_are_skipped(octave, tmp_path, zidx):
    # 2 planes + 1 flyback frame per volume; with zidx the plane comes from lastStripeData.zIdx
    frames = tuple(range(1, 10))
    run = run_acquisition(octave, tmp_path, planes=2, flyback=1, zidx=zidx, frames=frames)
    assert run.returncode == 0, run.stderr
    assert run.control("start")[0].meta["frame_step"] == 3
    check_frames(run, [(f, 1, (f - 1) % 3 + 1) for f in frames if (f - 1) % 3 < 2])
    assert run.warnings() == [], run.stderr


def test_planes_in_imagedata_cells(octave, tmp_path):
    run = run_acquisition(octave, tmp_path, planes=2, layout="zcell", frames=(1, 2, 4))
    assert run.returncode == 0, run.stderr
    check_frames(run, [(f, 1, z) for f in (1, 2, 4) for z in (1, 2)])


def test_lines_by_pixels_data_is_sent_fortran_ordered(octave, tmp_path):
    # a stripe that is not transposed (transposed = false, like hDisplay.lastFrame)
    run = run_acquisition(octave, tmp_path, transposed=False, frames=(1, 2))
    assert run.returncode == 0, run.stderr
    assert {m.header.order for m in run.frames} == {"F"}
    check_frames(run, [(1, 1, 1), (2, 1, 1)])


def test_only_saved_channels_are_published(octave, tmp_path):
    run = run_acquisition(octave, tmp_path, channels=(1, 2, 3), save=(2,), frames=(1, 2))
    assert run.returncode == 0, run.stderr
    check_frames(run, [(1, 2, 1), (2, 2, 1)])
    assert run.control("start")[0].meta["channels"] == [2]


def test_channel_not_saved_or_not_acquired_is_reported_once(octave, tmp_path):
    port = free_port()
    ep = f"tcp://127.0.0.1:{port}"
    run = run_acquisition(octave, tmp_path, endpoint=ep, args=["endpoint", ep, "channels", (1, 4)],
                          channels=(1, 2), save=(2,), frames=(1, 2, 3))
    assert run.returncode == 0, run.stderr
    check_frames(run, [(f, 1, 1) for f in (1, 2, 3)])  # 1 asked for and acquired; 4 is not acquired
    assert len(run.warnings("not saved")) == 1, run.stderr
    assert len(run.warnings("not acquired")) == 1, run.stderr


def test_malformed_stripe_data_warns_once_and_acquisition_goes_on(octave, tmp_path):
    run = run_acquisition(octave, tmp_path, frames=tuple(range(1, 9)), malformed=(3, 4, 5, 6))
    assert run.returncode == 0, run.stderr
    assert "DRIVER finished" in run.stdout
    check_frames(run, [(f, 1, 1) for f in (1, 2, 7, 8)])
    warned = run.warnings()
    assert len(warned) == 1, run.stderr
    assert "roiData" in warned[0] and "once per acquisition" in warned[0]
    (stop,) = run.control("stop")
    assert stop.meta["errors"] == 4


def test_frame_function_alone_announces_the_stream_and_abort_stops_it(octave, tmp_path):
    # frameAcquired registered without acqModeStart; the acquisition is aborted
    run = run_acquisition(octave, tmp_path, start=False, finish="abort", frames=(1, 2, 2, 3))
    assert run.returncode == 0, run.stderr
    assert run.messages[0].topic == "start"
    check_frames(run, [(1, 1, 1), (2, 1, 1), (3, 1, 1)])  # the repeated notification of 2 is sent once
    assert run.control("stop")[0].meta["reason"] == "abort"


def test_endpoint_as_plain_argument(octave, tmp_path):
    port = free_port()
    ep = f"tcp://127.0.0.1:{port}"
    run = run_acquisition(octave, tmp_path, endpoint=ep, args=[ep], frames=(1,))
    assert run.returncode == 0, run.stderr
    check_frames(run, [(1, 1, 1)])
    assert run.control("start")[0].meta["endpoint"] == ep


def test_endpoint_in_use_is_reported_once_and_never_throws(octave, tmp_path):
    import zmq

    port = free_port()
    ep = f"tcp://127.0.0.1:{port}"
    ctx = zmq.Context()
    squatter = ctx.socket(zmq.PUB)
    squatter.bind(ep)
    try:
        run = run_acquisition(octave, tmp_path, endpoint=ep, args=["endpoint", ep], subscribe=False,
                              frames=tuple(range(1, 6)))
    finally:
        squatter.close(0)
        ctx.term()
    assert run.returncode == 0, run.stderr
    assert "DRIVER finished" in run.stdout
    assert "cannot bind" in run.stderr and ep in run.stderr
    assert len(run.warnings("cannot bind")) == 1, run.stderr


def test_missing_jar_is_reported_once_and_never_throws(octave, tmp_path):
    port = free_port()
    ep = f"tcp://127.0.0.1:{port}"
    run = run_acquisition(octave, tmp_path, endpoint=ep, subscribe=False, frames=(1, 2, 3),
                          args=["endpoint", ep, "jar", "/nonexistent/jeromq.jar"])
    assert run.returncode == 0, run.stderr
    assert "DRIVER finished" in run.stdout
    assert len(run.warnings("/nonexistent/jeromq.jar does not exist")) == 1, run.stderr


def test_setup_check_reports_what_works_and_what_is_missing(octave, tmp_path):
    import subprocess

    from octave_harness import JAR, _octave_env, clean_stderr
    from livedenoise.stream.scanimage import matlab_path

    ep = f"tcp://127.0.0.1:{free_port()}"
    script = (
        f"addpath('{matlab_path()}');"
        "ok1 = livedenoise_setup('/nonexistent/jeromq.jar');"
        f"ok2 = livedenoise_setup('{JAR}', '{ep}');"
        "printf('RESULT %d %d\\n', ok1, ok2);"
    )
    res = subprocess.run([octave, "--norc", "--quiet", "--no-window-system", "--eval", script],
                         capture_output=True, text=True, timeout=300, env=_octave_env(), cwd=tmp_path)
    assert "RESULT 0 1" in res.stdout, res.stdout + res.stderr
    assert "/nonexistent/jeromq.jar does not exist" in clean_stderr(res.stderr)
    assert f"JeroMQ works; a PUB socket bound to {ep}" in res.stdout


def test_socket_is_kept_across_acquisitions_and_clear_functions(octave, tmp_path):
    # two Grabs in one MATLAB session, `clear functions` in between: same socket, no rebind error
    run = run_acquisition(octave, tmp_path, frames=(1, 2, 3), acquisitions=2, malformed=(2,))
    assert run.returncode == 0, run.stderr
    assert [m.topic for m in run.messages if not hasattr(m, "pixels")] == ["start", "stop", "start", "stop"]
    check_frames(run, [(1, 1, 1), (3, 1, 1), (1, 1, 1), (3, 1, 1)])
    assert len(run.warnings()) == 2, run.stderr  # the malformed frame is reported once per acquisition
    assert "cannot bind" not in run.stderr
