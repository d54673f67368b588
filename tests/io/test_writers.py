import h5py
import numpy as np
import pytest
import tifffile

from livedenoise.errors import UserError
from livedenoise.io import writers
from livedenoise.io.readers import open_movie
from livedenoise.io.writers import open_writer


def frames(t=25, h=12, w=18, dtype=np.int16):
    return np.random.default_rng(0).integers(-300, 300, size=(t, h, w)).astype(dtype)


@pytest.mark.parametrize("name", ["out.tif", "out.tiff", "out.h5", "out.hdf5"])
def test_round_trip_in_chunks(tmp_path, name):
    data = frames()
    with open_writer(tmp_path / name, len(data), data.shape[1:], data.dtype, attrs={"model": "x", "lag": 1}) as wr:
        for a in range(0, len(data), 7):
            wr.write(data[a:a + 7])
        assert not (tmp_path / name).exists()  # appears only when complete
    with open_movie(tmp_path / name) as m:
        np.testing.assert_array_equal(m.read(0, len(m)), data)
        if name.endswith((".tif", ".tiff")):
            assert m.memmapped  # readable without loading
    assert not list(tmp_path.glob("*partial*"))


def test_hdf5_layout_and_attributes(tmp_path):
    data = frames(dtype=np.float32)
    with open_writer(tmp_path / "o.h5", len(data), data.shape[1:], np.float32, attrs={"model": "lite", "lag": 1}) as wr:
        wr.write(data)
    with h5py.File(tmp_path / "o.h5") as f:
        ds = f["data"]
        assert ds.chunks == (1, 12, 18) and ds.dtype == np.float32
        assert ds.attrs["model"] == "lite" and ds.attrs["lag"] == 1


def test_bigtiff_above_the_size_limit(tmp_path, monkeypatch):
    data = frames()
    monkeypatch.setattr(writers, "BIGTIFF_BYTES", data.nbytes - 1)
    with open_writer(tmp_path / "big.tif", len(data), data.shape[1:], data.dtype) as wr:
        wr.write(data)
    with tifffile.TiffFile(tmp_path / "big.tif") as tif:
        assert tif.is_bigtiff
    with open_writer(tmp_path / "small.tif", len(data) - 1, data.shape[1:], data.dtype) as wr:
        wr.write(data[:-1])
    with tifffile.TiffFile(tmp_path / "small.tif") as tif:
        assert not tif.is_bigtiff


def test_unknown_extension(tmp_path):
    with pytest.raises(UserError, match="unknown output format '.avi'"):
        open_writer(tmp_path / "o.avi", 3, (4, 4), np.int16)
    with pytest.raises(UserError, match="does not exist"):
        open_writer(tmp_path / "no" / "o.tif", 3, (4, 4), np.int16)


@pytest.mark.parametrize("name", ["o.tif", "o.h5"])
def test_failure_leaves_existing_file_alone_and_keeps_the_frames_written(tmp_path, name):
    """One rule for every writer (io/atomic.py): the final name only when complete; what was written is kept
    under the partial name `o.partial.<ext>`, readable; nothing written, nothing kept."""
    path = tmp_path / name
    partial = tmp_path / name.replace(".", ".partial.")
    path.write_bytes(b"previous")
    data = frames(5, 4, 4)
    with pytest.raises(KeyError):
        with open_writer(path, 5, (4, 4), np.int16) as wr:
            assert wr.partial == partial
            wr.write(data[:2])
            raise KeyError("boom")
    assert path.read_bytes() == b"previous"
    with open_movie(partial) as m:  # the frames written are there, in the same format
        np.testing.assert_array_equal(m.read(0, 2), data[:2])
    wr = open_writer(path, 5, (4, 4), np.int16)  # a new run replaces the stale partial
    wr.write(data[:3])
    with pytest.raises(RuntimeError, match="only 3 of 5 frames.*kept in .*o.partial"):
        wr.close()
    assert path.read_bytes() == b"previous"
    with open_movie(partial) as m:
        np.testing.assert_array_equal(m.read(0, 3), data[:3])
    with pytest.raises(KeyError):
        with open_writer(path, 5, (4, 4), np.int16):
            raise KeyError("before any frame")
    assert path.read_bytes() == b"previous" and not partial.exists()


def test_write_checks(tmp_path):
    with open_writer(tmp_path / "o.tif", 2, (4, 4), np.uint16) as wr:
        with pytest.raises(ValueError, match="do not match"):
            wr.write(np.zeros((1, 4, 5)))
        wr.write(np.ones((4, 4)))  # one frame without a time axis
        with pytest.raises(ValueError, match="exceed"):
            wr.write(np.zeros((2, 4, 4)))
        wr.write(np.ones((1, 4, 4)))
