"""`livedenoise demo`, the README's main command, end to end in a real subprocess."""

import json
import subprocess
import sys
from pathlib import Path

import h5py


def test_demo_streams_every_frame_denoises_and_writes_summary(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "livedenoise", "demo", "--out", str(out), "--size", "64", "--frames", "60",
         "--view", "no", "--json"],
        capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout)
    assert summary["frames_sent"] == 60
    assert summary["frames_denoised_received"] == 60
    assert summary["stats"]["malformed"] == 0 and summary["stats"]["dropped_upstream"] == 0
    assert summary["psnr_denoised"] > summary["psnr_raw"] + 10
    assert summary["trace_r_denoised"] > summary["trace_r_raw"]
    assert summary["parity_max_rel"] < 1e-4
    for key in ("movie", "onnx", "raw", "denoised", "summary_png"):
        assert Path(summary["files"][key]).stat().st_size > 0
    with h5py.File(summary["files"]["raw"], "r") as f:  # every raw frame kept
        assert f["frames"].shape[0] == 60


def test_demo_rejects_bad_sizes_with_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "livedenoise", "demo", "--out", str(tmp_path), "--size", "4"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "error" in proc.stderr
