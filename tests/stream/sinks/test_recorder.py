"""The recorder (stream/sinks/recorder.py) with real files: temporary names, bounded open files, part files,
one stream's file errors isolated, and what a crash (SIGKILL) leaves readable."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from livedenoise.stream.sinks.recorder import Recorder, read_recording, read_stream, recording_parts
from livedenoise.stream.stats import ServiceStats


def wait_until(pred, timeout=60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


def img(k, shape=(4, 5), dtype=np.int16):
    return np.full(shape, k, dtype)


@pytest.mark.parametrize("fmt, ext", [("h5", "h5"), ("tiff", "tif")])
def test_files_are_written_under_a_temporary_name_and_renamed_when_complete(tmp_path, fmt, ext):
    rec = Recorder(tmp_path, fmt)
    for k in range(5):
        rec.write("raw", 1, 1, 1, img(k), k, k / 30, 0.0)
    assert wait_until(lambda: (tmp_path / f"raw_c1_p1_a001.partial.{ext}").exists())
    assert not (tmp_path / f"raw_c1_p1_a001.{ext}").exists()
    rec.end("raw", 1, 1, 1)
    assert wait_until(lambda: (tmp_path / f"raw_c1_p1_a001.{ext}").exists())
    assert not (tmp_path / f"raw_c1_p1_a001.partial.{ext}").exists()
    rec.close()
    assert list(read_recording(tmp_path / f"raw_c1_p1_a001.{ext}")["frame"]) == list(range(5))
    assert rec.paths == [tmp_path / f"raw_c1_p1_a001.{ext}"]


def test_open_files_are_bounded_and_every_stream_is_recorded_in_parts(tmp_path):
    stats = ServiceStats()
    rec = Recorder(tmp_path, "h5", stats=stats, max_open=3)
    streams = [(ch, pl) for ch in range(5) for pl in (1, 2)]  # 10 streams, 3 files at most
    for k in range(6):
        for ch, pl in streams:
            rec.write("raw", ch, pl, 1, img(100 * ch + 10 * pl + k), k, 0.0, 0.0)
    rec.close()
    assert rec.max_open_seen <= 3 and rec.files_open == 0 and stats.record_dropped == 0
    for ch, pl in streams:
        got = read_stream(tmp_path, "raw", ch, pl, 1)
        assert list(got["frame"]) == list(range(6))
        assert [int(f[0, 0]) for f in got["frames"]] == [100 * ch + 10 * pl + k for k in range(6)]
    parts = recording_parts(tmp_path, "raw", 0, 1, 1)
    assert len(parts) > 1 and parts[1].name == "raw_c0_p1_a001_part2.h5"
    assert not list(tmp_path.glob("*.partial.*"))


def test_an_idle_file_is_closed_and_its_stream_continues_in_a_new_part(tmp_path):
    rec = Recorder(tmp_path, "h5", flush_s=0.05, idle_close_s=0.2)
    rec.write("raw", 1, 1, 1, img(0), 0, 0.0, 0.0)
    assert wait_until(lambda: (tmp_path / "raw_c1_p1_a001.h5").exists())  # closed and renamed while idle
    rec.write("raw", 1, 1, 1, img(1), 1, 0.0, 0.0)
    rec.close()
    assert [p.name for p in recording_parts(tmp_path, "raw", 1, 1, 1)] == ["raw_c1_p1_a001.h5",
                                                                         "raw_c1_p1_a001_part2.h5"]
    assert list(read_stream(tmp_path, "raw", 1, 1, 1)["frame"]) == [0, 1]


def test_a_file_that_cannot_be_created_costs_only_its_own_stream(tmp_path):
    stats = ServiceStats()
    (tmp_path / "raw_c3_p1_a001.partial.h5").mkdir()  # the name is taken: creating that file fails
    rec = Recorder(tmp_path, "h5", stats=stats, retry_s=0.5)
    for k in range(4):
        for ch in (1, 3, 2):
            rec.write("raw", ch, 1, 1, img(k), k, 0.0, 0.0)
    assert wait_until(lambda: rec._queued_items == 0)
    time.sleep(0.6)  # past retry_s: the stream tries again, in a new part
    rec.write("raw", 3, 1, 1, img(9), 9, 0.0, 0.0)
    rec.close()
    for ch in (1, 2):
        assert list(read_recording(tmp_path / f"raw_c{ch}_p1_a001.h5")["frame"]) == [0, 1, 2, 3]
    got = list(read_stream(tmp_path, "raw", 3, 1, 1)["frame"])  # part 2 on: the first part could not be made
    assert got[-1] == 9 and (tmp_path / "raw_c3_p1_a001_part2.h5").exists()
    err = stats.record_stream_errors["raw_c3_p1_a001"]
    assert stats.record_errors == err["errors"] == 1 and "cannot create" in err["last_error"]
    assert err["dropped"] == stats.record_dropped >= 1 and err["dropped"] + len(got) == 5  # none lost silently
    assert rec.health.errors == 0 and rec.health.state == "stopped"


def test_a_write_error_in_one_file_does_not_stop_the_others(tmp_path):
    stats = ServiceStats()
    rec = Recorder(tmp_path, "h5", stats=stats)
    for k in range(3):
        rec.write("raw", 1, 1, 1, img(k), k, 0.0, 0.0)
        rec.write("raw", 2, 1, 1, img(k), k, 0.0, 0.0)
    assert wait_until(lambda: (tmp_path / "raw_c2_p1_a001.partial.h5").exists())
    rec.write("raw", 2, 1, 1, img(3, (7, 7)), 3, 0.0, 0.0)  # cannot go into that file's (4, 5) dataset
    for k in range(3, 6):
        rec.write("raw", 1, 1, 1, img(k), k, 0.0, 0.0)
    rec.close()
    assert list(read_recording(tmp_path / "raw_c1_p1_a001.h5")["frame"]) == list(range(6))
    assert stats.record_errors == 1 and stats.record_dropped >= 1
    assert stats.record_stream_errors["raw_c2_p1_a001"]["errors"] == 1
    left = recording_parts(tmp_path, "raw", 2, 1, 1)  # what it held up to the error stays readable
    assert left and set(read_stream(tmp_path, "raw", 2, 1, 1)["frame"]) <= {0, 1, 2}


_CRASH = textwrap.dedent("""
    import sys, time
    import numpy as np
    from livedenoise.stream.sinks.recorder import Recorder
    rec = Recorder(sys.argv[1], sys.argv[2], flush_s=0.1)
    for k in range(10):
        rec.write("raw", 1, 1, 1, np.full((4, 5), k, np.int16), k, k / 30, 0.0)
    while rec._queued_items:      # written (then flushed every 0.1 s)
        time.sleep(0.01)
    print("written", flush=True)
    time.sleep(600)
""")


def _frames_on_disk(path) -> int:
    """Frames another process reads back from a recording being written (0 while it cannot be read yet)."""
    try:
        return len(read_recording(path)["frame"])
    except Exception:  # noqa: BLE001 -- not flushed far enough to be read yet
        return 0


@pytest.mark.parametrize("fmt, ext", [("h5", "h5"), ("tiff", "tif")])
def test_what_a_crash_leaves_is_readable_up_to_the_last_flush(tmp_path, fmt, ext):
    left = tmp_path / f"raw_c1_p1_a001.partial.{ext}"
    p = subprocess.Popen([sys.executable, "-c", _CRASH, str(tmp_path), fmt], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "written"
        # flushed: this process (not the writer's) reads all 10 back; then the writer is killed
        assert wait_until(lambda: _frames_on_disk(left) == 10), _frames_on_disk(left)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(60)
    assert left.exists() and not (tmp_path / f"raw_c1_p1_a001.{ext}").exists()
    got = read_recording(left)
    assert list(got["frame"]) == list(range(10)) and [int(f[0, 0]) for f in got["frames"]] == list(range(10))
    assert [q.name for q in recording_parts(tmp_path, "raw", 1, 1, 1, fmt)] == [left.name]


def test_frames_after_close_are_counted_not_lost_silently(tmp_path):
    stats = ServiceStats()
    rec = Recorder(tmp_path, "h5", stats=stats)
    rec.close()
    assert rec.write("raw", 1, 1, 1, img(0), 0, 0.0, 0.0) is False
    assert stats.record_dropped == 1
    assert os.listdir(tmp_path) == []


class BrokenRecorder(Recorder):
    def _body(self):
        raise OSError("injected: the writer cannot run")


def test_a_writer_thread_that_cannot_go_on_calls_on_fatal_and_counts_what_it_cannot_record(tmp_path):
    stats = ServiceStats()
    lines = []
    rec = BrokenRecorder(tmp_path, "h5", stats=stats, on_fatal=lines.append)
    assert wait_until(lambda: rec.health.state == "failed")
    assert len(lines) == 1 and "cannot go on" in lines[0] and "injected" in lines[0]
    assert rec.health.restarts == 5 and rec.health.errors == 6
    assert rec.write("raw", 1, 1, 1, img(0), 0, 0.0, 0.0) is False and stats.record_dropped == 1
    rec.close(timeout=5)
