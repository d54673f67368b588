"""`livedenoise demo`, the README's main command, end to end in a real subprocess; its summary on gaps."""

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np


def demo(tmp_path, *args, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "livedenoise", "demo", "--out", str(tmp_path / "demo"), "--size", "64",
         "--view", "no", *map(str, args)],
        capture_output=True, text=True, timeout=timeout,
    )


def test_demo_streams_every_frame_denoises_and_writes_summary(tmp_path):
    proc = demo(tmp_path, "--frames", 60, "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout)
    assert summary["frames_sent"] == 60
    assert summary["frames_denoised_received"] == summary["frames_denoised_recorded"] == 60 and summary["complete"]
    assert summary["stats"]["malformed"] == 0 and summary["stats"]["dropped_upstream"] == 0
    assert summary["metric_frames"] == 60 and not summary["partial"] and summary["missing_denoised"] == []
    assert summary["psnr_denoised"] > summary["psnr_raw"] + 10
    assert summary["trace_r_denoised"] > summary["trace_r_raw"]
    assert set(summary["rise_profile_denoised"]) == {"-1", "0", "1", "2"}
    assert summary["rise_profile_denoised"]["0"] == summary["onset_rise_denoised"]
    assert summary["parity_max_rel"] < 1e-4
    assert summary["measured_fps"] > 0 and summary["fps_replayed"] <= 30  # 30 Hz, or slower on a slow machine
    for key in ("movie", "onnx", "raw", "denoised", "summary_png"):
        assert Path(summary["files"][key]).stat().st_size > 0
    with h5py.File(summary["files"]["raw"], "r") as f:  # every raw frame kept
        assert f["frames"].shape[0] == 60


def test_demo_paces_itself_to_what_the_machine_sustains_and_says_so(tmp_path):
    """A replay rate no machine can denoise at: the demo measures its rate, replays slower, says so, gets every
    frame and exits 0."""
    proc = demo(tmp_path, "--frames", 60, "--fps", 100000)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "this machine denoises" in out and "too slow for 100000 Hz" in out and "the demo replays at" in out
    assert "60/60 frames denoised and recorded, 60/60 received" in out
    assert "paced down from 100000 Hz because this machine denoised" in out
    assert "(all 60 frames)" in out


def test_demo_waits_for_every_queued_frame_when_told_not_to_pace(tmp_path):
    """--no-pace at a rate far beyond the machine: frames queue in the service; the demo waits until every one
    is denoised, recorded and received (no fixed deadline), then exits 0 with a summary that says why latency
    is high."""
    proc = demo(tmp_path, "--frames", 200, "--fps", 100000, "--no-pace")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "replaying at 100000 Hz anyway (--no-pace): frames will queue" in out
    assert "200/200 frames denoised and recorded, 200/200 received" in out
    assert "frames queued, and the latency includes their wait" in out


def _recording(folder: Path, raw_idx, den_idx, movie) -> "object":
    from livedenoise.stream.report import SessionFiles

    folder.mkdir()
    for name, idx in (("raw", raw_idx), ("denoised", den_idx)):
        with h5py.File(folder / f"{name}_c1_p1_a001.h5", "w") as f:
            f["frames"] = movie[idx].astype(np.float32 if name == "denoised" else np.int16)
            f["frame"] = np.asarray(idx, np.int64)
    return SessionFiles(folder / "raw_c1_p1_a001.h5", folder / "denoised_c1_p1_a001.h5")


def test_summary_of_a_partial_session_marks_gaps_and_flags_its_metrics(tmp_path):
    from livedenoise.sim.imaging import SimConfig, simulate_movie
    from livedenoise.stream.report import missing_runs, on_frame_grid, write_summary_png

    sim = simulate_movie(SimConfig(frames=90, height=32, width=32, seed=2))
    den_idx = np.array([k for k in range(90) if not (20 <= k < 43 or k in (60, 61) or k == 89)])
    files = _recording(tmp_path / "rec", np.arange(90), den_idx, sim.noisy)
    numbers = write_summary_png(tmp_path / "s.png", files, np.array([30.0, 40.0]), truth=sim, frames=90)
    assert (tmp_path / "s.png").stat().st_size > 0
    assert numbers["missing_denoised"] == [(20, 42), (60, 61), (89, 89)] and numbers["missing_raw"] == []
    assert numbers["partial"] and numbers["metric_frames"] == len(den_idx) == 64 and numbers["movie_frames"] == 90
    assert "onset_rise_denoised" not in numbers  # needs every frame from the first
    # the traces are drawn on the frame grid with NaN at the missing frames: lines break, never bridge a gap
    grid = on_frame_grid(den_idx, np.vstack([den_idx * 1.0, den_idx * 2.0]), 90)
    assert grid.shape == (2, 90) and np.isnan(grid[:, 20:43]).all() and np.isnan(grid[:, 89]).all()
    assert grid[1, 19] == 38.0 and grid[0, 43] == 43.0
    assert missing_runs(np.arange(10), 10) == []


def test_demo_rejects_bad_sizes_with_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "livedenoise", "demo", "--out", str(tmp_path), "--size", "4"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "error" in proc.stderr
