"""Which axis is time: read from what the file says (DIMENSION_LABELS, hyperstack axes) or `--axes`, never guessed.

Issue 13, point 3: an HDF5 movie stored time-last (H, W, T) was read as H frames of W x T, and a 5-D
dataset labelled (t, z, y, x, c) was refused. Each input here is generated, with the right frames as
the assertion.
"""

from __future__ import annotations

import subprocess
import sys

import h5py
import numpy as np
import pytest
import tifffile

from livedenoise.errors import UserError
from livedenoise.io.readers import H5Movie, open_movie

T, H, W = 30, 20, 24  # non-square frames, T unlike both


def movie(t=T, h=H, w=W, dtype=np.int16, seed=0):
    """(T, H, W) with every frame different: a reading that mixes axes cannot match."""
    rng = np.random.default_rng(seed)
    return rng.integers(-1000, 3000, size=(t, h, w)).astype(dtype)


def write_h5(path, data, labels=None, name="mov", **kw):
    with h5py.File(path, "w") as f:
        ds = f.create_dataset(name, data=data, **kw)
        for i, label in enumerate(labels or ()):
            ds.dims[i].label = label
    return path


def read_all(path, **kw):
    with open_movie(path, **kw) as m:
        return m.shape, m.read(0, len(m)), m


def test_time_last_hdf5_without_labels_is_refused_with_both_readings(tmp_path):
    data = movie()
    path = write_h5(tmp_path / "hwt.h5", np.ascontiguousarray(data.transpose(1, 2, 0)))  # (H, W, T)
    with pytest.raises(UserError) as err:
        open_movie(path)
    msg = str(err.value)
    assert "\n" not in msg
    for part in ("(20, 24, 30)", "TYX (20 frames of 24x30)", "YXT (30 frames of 20x24)", "--axes"):
        assert part in msg, msg


def test_time_last_hdf5_with_axes_yxt_reads_the_frames_lazily(tmp_path):
    data = movie()
    path = write_h5(tmp_path / "hwt.h5", np.ascontiguousarray(data.transpose(1, 2, 0)))
    with open_movie(path, axes="YXT") as m:
        assert isinstance(m, H5Movie)  # read by hyperslab, not loaded
        assert m.shape == (T, H, W) and m.dtype == np.int16
        np.testing.assert_array_equal(m.read(3, 7), data[3:7])
        np.testing.assert_array_equal(m.read(0, T), data)
        assert m.read(7, 8).flags.c_contiguous
    _, got, _ = read_all(path, axes="yxt")  # case does not matter
    np.testing.assert_array_equal(got, data)


@pytest.mark.parametrize("labels", [("y", "x", "t"), ("row", "column", "time"), ("Y", "X", "frames")])
def test_dimension_labels_say_where_time_is(tmp_path, labels):
    data = movie()
    path = write_h5(tmp_path / "lab.h5", np.ascontiguousarray(data.transpose(1, 2, 0)), labels)
    shape, got, m = read_all(path)
    assert shape == (T, H, W)
    np.testing.assert_array_equal(got, data)
    assert "DIMENSION_LABELS" in m.describe()


def test_labels_and_axes_for_t_first_data_read_as_stored(tmp_path):
    data = movie()
    path = write_h5(tmp_path / "tyx.h5", data, ("t", "y", "x"))
    np.testing.assert_array_equal(read_all(path)[1], data)
    # --axes overrides labels: here, the frames transposed
    np.testing.assert_array_equal(read_all(path, axes="TXY")[1], data.transpose(0, 2, 1))


def test_five_d_labelled_dataset_is_read_with_plane_and_channel(tmp_path):
    rng = np.random.default_rng(5)
    data = rng.integers(0, 4000, size=(T, 3, H, W, 2)).astype(np.uint16)  # (t, z, y, x, c)
    path = write_h5(tmp_path / "five.h5", data, ("t", "z", "y", "x", "c"), name="imaging")
    with pytest.raises(UserError, match=r"holds 3 planes .*--plane \(1-3\)"):
        open_movie(path)
    with pytest.raises(UserError, match=r"holds 2 channels .*--channel \(1-2\)"):
        open_movie(path, plane=1)
    with pytest.raises(UserError, match="has no plane 4: it holds planes 1-3"):
        open_movie(path, plane=4, channel=1)
    for z in (1, 2, 3):
        for c in (1, 2):
            shape, got, m = read_all(path, plane=z, channel=c)
            assert shape == (T, H, W)
            np.testing.assert_array_equal(got, data[:, z - 1, :, :, c - 1])
    assert "plane 3, channel 2" in m.describe()


def test_five_d_unlabelled_dataset_needs_axes(tmp_path):
    rng = np.random.default_rng(6)
    data = rng.integers(0, 4000, size=(T, 3, H, W, 2)).astype(np.uint16)
    path = write_h5(tmp_path / "five.h5", data)
    with pytest.raises(UserError, match=r"5-D array of shape \(30, 3, 20, 24, 2\).*--axes"):
        open_movie(path)
    np.testing.assert_array_equal(read_all(path, axes="TZYXC", plane=2, channel=1)[1], data[:, 1, :, :, 0])


@pytest.mark.parametrize("shape", [(16, 16, 16), (40, 32, 40), (64, 64, 300), (100, 40, 200)])
def test_ambiguous_unlabelled_shapes_are_never_guessed(tmp_path, shape):
    """A cube, a tie between the readings, time-last square frames, elongated frames: refused."""
    path = write_h5(tmp_path / "amb.h5", np.zeros(shape, np.float32))
    with pytest.raises(UserError, match=r"--axes TYX or --axes YXT"):
        open_movie(path)


@pytest.mark.parametrize("shape", [(300, 48, 64), (100, 256, 256), (12, 20, 24), (1, 32, 32), (2, 20, 24)])
def test_plain_time_first_shapes_are_read_as_tyx(tmp_path, shape):
    data = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    path = write_h5(tmp_path / "tyx.h5", data)
    got_shape, got, _ = read_all(path)
    assert got_shape == shape
    np.testing.assert_array_equal(got, data)


def test_chunks_say_how_frames_are_stored(tmp_path):
    # 48 frames of 64 x 300, written frame by frame: chunks (1, 64, 300) make TYX plain
    data = movie(48, 64, 300)
    path = write_h5(tmp_path / "framed.h5", data, chunks=(1, 64, 300))
    np.testing.assert_array_equal(read_all(path)[1], data)
    # the same shape chunked along the last axis, (48, 64, 1): time-last by its own structure -> refused
    path = write_h5(tmp_path / "timelast.h5", data, chunks=(48, 64, 1))
    with pytest.raises(UserError, match="--axes"):
        open_movie(path)


def test_livedenoise_record_and_default_dataset_files_are_time_first(tmp_path):
    data = movie(20, 32, 40)  # a tie-breaking shape were it not for the file's structure
    with h5py.File(tmp_path / "rec.h5", "w") as f:  # a `serve --record` file
        f["frames"], f["frame"] = data, np.arange(100, 120)
    with open_movie(tmp_path / "rec.h5") as m:
        np.testing.assert_array_equal(m.read(0, 20), data)
        assert list(m.counters()) == list(range(100, 120))
    with h5py.File(tmp_path / "truth.h5", "w") as f:
        f.attrs["default_dataset"] = "clean"
        f["clean"] = data.astype(np.float32)
        f["masks"] = np.zeros((3, 32, 40), bool)
    np.testing.assert_array_equal(read_all(tmp_path / "truth.h5")[1], data)


def test_unknown_or_partial_labels_are_refused_naming_axes(tmp_path):
    data = movie()
    path = write_h5(tmp_path / "odd.h5", data, ("t", "bananas", "x"))
    with pytest.raises(UserError, match=r"'bananas' is not an axis .*--axes"):
        open_movie(path)
    path = write_h5(tmp_path / "part.h5", data, ("t",))
    with pytest.raises(UserError, match=r"leave axis 1 unnamed; say the layout with --axes"):
        open_movie(path)
    np.testing.assert_array_equal(read_all(path, axes="TYX")[1], data)


def test_bad_axes_values_are_refused(tmp_path):
    path = write_h5(tmp_path / "m.h5", movie())
    for bad in ("TQX", "TTX", "TY", ""):
        with pytest.raises(UserError, match="is not a layout"):
            open_movie(path, axes=bad)
    with pytest.raises(UserError, match=r"--axes TYXC has 4 letters but the array has 3 axes"):
        open_movie(path, axes="TYXC")
    with pytest.raises(UserError, match=r"--channel applies to ScanImage TIFFs and to movies with a C \(channel\) axis"):
        open_movie(path, channel=1)


def test_npy_in_yxt_with_axes_stays_memory_mapped(tmp_path):
    data = movie(dtype=np.float32)
    np.save(tmp_path / "yxt.npy", np.ascontiguousarray(data.transpose(1, 2, 0)))
    with open_movie(tmp_path / "yxt.npy", axes="YXT") as m:
        assert m.memmapped and m.shape == (T, H, W)
        np.testing.assert_array_equal(m.read(4, 9), data[4:9])
    four = np.stack([data, -data], axis=1)  # (T, C, H, W)
    np.save(tmp_path / "tcyx.npy", four)
    with pytest.raises(UserError, match="4-D array.*--axes"):
        open_movie(tmp_path / "tcyx.npy")
    np.testing.assert_array_equal(read_all(tmp_path / "tcyx.npy", axes="TCYX", channel=2)[1], -data)


def test_tiff_with_axes_and_hyperstack_axes(tmp_path):
    data = movie(dtype=np.uint16)
    # an (H, W, T) array saved as is: H pages of W x T; --axes YXT reads it (memory-mapped)
    tifffile.imwrite(tmp_path / "yxt.tif", np.ascontiguousarray(data.transpose(1, 2, 0)), photometric="minisblack")
    with open_movie(tmp_path / "yxt.tif", axes="YXT") as m:
        assert m.memmapped
        np.testing.assert_array_equal(m.read(0, T), data)
    # compressed pages holding (X, Y) frames: page by page, transposed
    tifffile.imwrite(tmp_path / "txy.tif", np.ascontiguousarray(data.transpose(0, 2, 1)), photometric="minisblack",
                     compression="zlib")
    np.testing.assert_array_equal(read_all(tmp_path / "txy.tif", axes="TXY")[1], data)
    # an ImageJ hyperstack says TZCYX itself
    rng = np.random.default_rng(2)
    hs = rng.integers(0, 4000, size=(10, 3, 2, H, W)).astype(np.uint16)
    for comp in (None, "zlib"):
        path = tmp_path / f"hyper_{comp}.tif"
        tifffile.imwrite(path, hs, imagej=True, metadata={"axes": "TZCYX"}, compression=comp)
        with pytest.raises(UserError, match=r"holds 3 planes .*--plane \(1-3\)"):
            open_movie(path)
        np.testing.assert_array_equal(read_all(path, plane=3, channel=2)[1], hs[:, 2, 1])


def test_cli_refusal_is_one_line_exit_2_naming_axes(tmp_path):
    data = movie()
    path = write_h5(tmp_path / "hwt.h5", np.ascontiguousarray(data.transpose(1, 2, 0)))
    r = subprocess.run([sys.executable, "-m", "livedenoise", "train", str(path), "--out", str(tmp_path / "m.pt"),
                        "--steps", "1", "--quiet"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("livedenoise train: error: ")
    for part in ("(20, 24, 30)", "--axes TYX or --axes YXT", "30 frames of 20x24"):
        assert part in lines[0], lines[0]
    assert not (tmp_path / "m.pt").exists()


def test_every_verb_gets_the_same_movie_flags(tmp_path):
    """`add_movie_arguments` gives --channel/--plane/--dataset/--axes; `open_movie_from_args` passes them on."""
    import argparse

    from livedenoise.commands.args import add_movie_arguments, movie_options, open_movie_from_args

    data = movie()
    path = write_h5(tmp_path / "hwt.h5", np.ascontiguousarray(data.transpose(1, 2, 0)))
    parser = argparse.ArgumentParser()
    add_movie_arguments(parser)
    args = parser.parse_args(["--axes", "YXT", "--dataset", "mov"])
    assert movie_options(args) == {"channel": None, "plane": None, "dataset": "mov", "axes": "YXT"}
    with open_movie_from_args(path, args) as m:
        np.testing.assert_array_equal(m.read(0, T), data)
