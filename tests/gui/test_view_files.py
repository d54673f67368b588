"""`view --file` opens every movie `denoise` opens, through the one reader (`open_movie`).

The viewer's frames (every frame's ROI mean on the receiver thread, and the last
frame drawn) are compared with what `livedenoise.io.readers.open_movie` returns
for the same file, flags included: ScanImage TIFF (--channel / --plane), plain
TIFF, BigTIFF, page-by-page (compressed) TIFF, HDF5 (--dataset), .npy. The CLI's
--screenshot mode runs as a real subprocess on a ScanImage TIFF and a plain TIFF.
"""

import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
import tifffile
from gui_helpers import wait_until

from livedenoise.gui.app import ViewOptions, build_imaging
from livedenoise.io.readers import open_movie
from livedenoise.io.scanimage_tiff import write_scanimage_tiff

T, H, W = 12, 24, 40
ROI = (5, 4, 10, 6)  # X, Y, W, H as --roi takes it


def _data(seed=0, offset=0):
    return (np.random.default_rng(seed).integers(0, 2000, (T, H, W)) + offset).astype(np.int16)


def _scanimage(tmp_path):
    """Two channels (IDs 1, 2), two planes: (T, Z, C, H, W)."""
    data = np.stack([np.stack([_data(1), _data(2, 3000)], 1), np.stack([_data(3, 6000), _data(4, 9000)], 1)], 1)
    return write_scanimage_tiff(tmp_path / "si.tif", data, channels=[1, 2])


def _files(tmp_path):
    """(path, open_movie / view keyword arguments) for each kind of movie `denoise` reads."""
    tifffile.imwrite(tmp_path / "plain.tif", _data(5))
    tifffile.imwrite(tmp_path / "big.tif", _data(6), bigtiff=True)
    tifffile.imwrite(tmp_path / "zlib.tif", _data(7), compression="zlib")
    with h5py.File(tmp_path / "two.h5", "w") as f:
        f["mov"], f["other"] = _data(8), _data(9)
    np.save(tmp_path / "m.npy", _data(10))
    return {
        "scanimage": (_scanimage(tmp_path), {"channel": 2, "plane": 2}),
        "tiff": (tmp_path / "plain.tif", {}),
        "bigtiff": (tmp_path / "big.tif", {}),
        "pages": (tmp_path / "zlib.tif", {}),
        "hdf5": (tmp_path / "two.h5", {"dataset": "other"}),
        "npy": (tmp_path / "m.npy", {}),
    }


@pytest.mark.parametrize("kind", ["scanimage", "tiff", "bigtiff", "pages", "hdf5", "npy"])
def test_file_playback_shows_what_open_movie_reads(qapp, tmp_path, kind):
    path, kw = _files(tmp_path)[kind]
    with open_movie(path, **kw) as mv:
        expect = mv.read(0, len(mv))
    win = build_imaging(ViewOptions(file=str(path), fps=0, rois=(ROI,), **kw))
    try:
        assert win.den is None
        assert wait_until(lambda: win.raw.status().finished, 60, qapp), win.raw.status()
        for _ in range(3):
            qapp.processEvents()
            win.tick()
        st = win.raw.status()
        assert st.frames == T and not st.last_error
        assert win.stream == (kw.get("channel", 1), kw.get("plane", 1))
        shown = win.panels["raw"].item.image
        np.testing.assert_array_equal(shown, expect[-1].astype(np.float32))
        x, y, w, h = ROI
        t, frames, means = win.roi_traces(0)["raw"]
        assert list(frames) == list(range(T))
        np.testing.assert_allclose(means, expect[:, y:y + h, x:x + w].mean(axis=(1, 2)), rtol=1e-6)
    finally:
        win.close()


def test_a_scanimage_file_with_several_streams_needs_channel_and_plane_like_denoise(qapp, tmp_path):
    from livedenoise.errors import UserError

    path = _scanimage(tmp_path)
    with pytest.raises(UserError, match="--channel") as viewer:
        build_imaging(ViewOptions(file=str(path), fps=0))
    with pytest.raises(UserError) as reader:
        open_movie(path)
    assert str(viewer.value) == str(reader.value)


def test_a_plain_denoised_file_beside_a_scanimage_file_plays_in_the_same_stream(qapp, tmp_path):
    path = _scanimage(tmp_path)
    tifffile.imwrite(tmp_path / "den.tif", _data(11).astype(np.float32))
    win = build_imaging(ViewOptions(file=str(path), denoised_file=str(tmp_path / "den.tif"), fps=0, channel=1, plane=2))
    try:
        assert wait_until(lambda: win.raw.status().finished and win.den.status().finished, 60, qapp)
        for _ in range(3):
            qapp.processEvents()
            win.tick()
        assert win.stream == (1, 2) and win._shown["denoised"].frame == T - 1 == win._shown["raw"].frame
    finally:
        win.close()


def _view(*args):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["QT_QPA_PLATFORM"] = "offscreen"
    return subprocess.run([sys.executable, "-m", "livedenoise", "view", *args], capture_output=True, text=True,
                          timeout=300, env=env)


def test_cli_screenshot_of_a_scanimage_tiff_and_a_plain_tiff(tmp_path):
    si = _scanimage(tmp_path)
    tifffile.imwrite(tmp_path / "plain.tif", _data(5))
    for args in ([str(si), "--channel", "2", "--plane", "1"], [str(tmp_path / "plain.tif")]):
        out = tmp_path / "shot.png"
        r = _view("--file", *args, "--screenshot", str(out), "--frames", str(T), "--fps", "0", "--size", "900x600")
        assert r.returncode == 0, r.stderr
        assert f"saved {out} after {T} frames" in r.stdout and out.stat().st_size > 0
        out.unlink()
    r = _view("--file", str(si), "--screenshot", str(tmp_path / "no.png"))
    assert r.returncode == 2 and "pick a channel with --channel" in r.stderr and len(r.stderr.strip().splitlines()) == 1
