
import h5py
import numpy as np
import pytest
import tifffile

from livedenoise.errors import UserError
from livedenoise.io.readers import Movie, open_movie


def movie_data(t=12, h=20, w=24, dtype=np.int16):
    rng = np.random.default_rng(1)
    return rng.integers(-500, 3000, size=(t, h, w)).astype(dtype)


def check_reads(movie: Movie, data: np.ndarray):
    assert movie.shape == data.shape
    assert len(movie) == data.shape[0]
    assert movie.frame_shape == data.shape[1:]
    assert movie.dtype == data.dtype
    part = movie.read(3, 7)
    assert part.shape == (4, *data.shape[1:]) and part.dtype == data.dtype
    np.testing.assert_array_equal(part, data[3:7])
    np.testing.assert_array_equal(movie.read(0, len(movie)), data)
    assert movie.read(5, 5).shape == (0, *data.shape[1:])
    with pytest.raises(IndexError):
        movie.read(0, len(movie) + 1)


@pytest.mark.parametrize("bigtiff", [False, True])
def test_contiguous_tiff_is_memory_mapped(tmp_path, bigtiff):
    data = movie_data()
    tifffile.imwrite(tmp_path / "m.tif", data, bigtiff=bigtiff)
    with open_movie(tmp_path / "m.tif") as m:
        assert m.memmapped and isinstance(m._array, np.memmap)
        check_reads(m, data)
        # a read returns only the frames asked for, as a private copy
        piece = m.read(2, 3)
        assert not isinstance(piece, np.memmap) and piece.nbytes == data[0].nbytes
    with tifffile.TiffFile(tmp_path / "m.tif") as tif:
        assert tif.is_bigtiff == bigtiff


def test_big_endian_tiff(tmp_path):
    data = movie_data(dtype=np.uint16)
    tifffile.imwrite(tmp_path / "be.tif", data, byteorder=">")
    with open_movie(tmp_path / "be.tif") as m:
        assert m.memmapped
        assert m.dtype == np.dtype(np.uint16) and m.dtype.isnative
        check_reads(m, data)


def test_compressed_tiff_is_read_page_by_page(tmp_path):
    data = movie_data(dtype=np.float32)
    tifffile.imwrite(tmp_path / "z.tiff", data, compression="zlib")
    with open_movie(tmp_path / "z.tiff") as m:
        assert not m.memmapped
        check_reads(m, data)


def test_tiff_written_one_page_at_a_time(tmp_path):
    data = movie_data(dtype=np.uint16)
    with tifffile.TiffWriter(tmp_path / "p.tif") as tw:
        for frame in data:
            tw.write(frame, compression="zlib")
    with open_movie(tmp_path / "p.tif") as m:
        check_reads(m, data)


def test_imagej_tiff(tmp_path):
    data = movie_data(dtype=np.uint16)
    tifffile.imwrite(tmp_path / "ij.tif", data, imagej=True)
    with open_movie(tmp_path / "ij.tif") as m:
        assert m.memmapped
        check_reads(m, data)


def test_npy_is_memory_mapped(tmp_path):
    data = movie_data(dtype=np.float32)
    np.save(tmp_path / "m.npy", data)
    with open_movie(tmp_path / "m.npy") as m:
        assert m.memmapped and isinstance(m._array, np.memmap)
        check_reads(m, data)


def test_hdf5_default_named_and_only_3d_dataset(tmp_path):
    data = movie_data()
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f.create_dataset("data", data=data, chunks=(1, 20, 24))
        f.create_dataset("mov", data=data[:2])
        f["meta/rate"] = np.arange(3)
    with open_movie(tmp_path / "a.h5") as m:  # two 3D datasets: 'data' wins
        assert m.dataset == "/data"
        check_reads(m, data)
    with open_movie(tmp_path / "a.h5", dataset="mov") as m:
        assert m.shape == (2, 20, 24)
    with h5py.File(tmp_path / "b.hdf5", "w") as f:
        f.create_dataset("group/frames", data=data)
        f["other"] = np.zeros((4, 4))
    with open_movie(tmp_path / "b.hdf5") as m:  # the only 3D dataset
        check_reads(m, data)


def test_hdf5_singleton_axes_are_dropped(tmp_path):
    data = movie_data()
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["stack"] = data[:, None]
    with open_movie(tmp_path / "a.h5") as m:
        check_reads(m, data)


def test_hdf5_missing_and_ambiguous_datasets(tmp_path):
    data = movie_data()
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["x"] = data
        f["y"] = data
        f["z"] = np.zeros(3)
    with pytest.raises(UserError, match=r"no dataset 'nope'.*x 12x20x24.*y 12x20x24"):
        open_movie(tmp_path / "a.h5", dataset="nope")
    with pytest.raises(UserError, match="several 3D datasets; pick one with --dataset"):
        open_movie(tmp_path / "a.h5")
    with pytest.raises(UserError, match="not a movie"):
        open_movie(tmp_path / "a.h5", dataset="z")


def test_missing_file_and_unknown_extension(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        open_movie(tmp_path / "nope.tif")
    (tmp_path / "m.avi").write_bytes(b"RIFF")
    with pytest.raises(UserError, match="unknown movie format '.avi'"):
        open_movie(tmp_path / "m.avi")


def test_single_image_is_not_a_movie(tmp_path):
    tifffile.imwrite(tmp_path / "img.tif", movie_data()[0])
    with pytest.raises(UserError, match="single 20x24 image, not a movie"):
        open_movie(tmp_path / "img.tif")
    np.save(tmp_path / "img.npy", movie_data()[0])
    with pytest.raises(UserError, match="not a movie"):
        open_movie(tmp_path / "img.npy")
    with h5py.File(tmp_path / "img.h5", "w") as f:
        f["data"] = movie_data()[0]
    with pytest.raises(UserError, match="single 20x24 image, not a movie"):
        open_movie(tmp_path / "img.h5")


def test_channel_plane_dataset_refused_where_they_do_not_apply(tmp_path):
    tifffile.imwrite(tmp_path / "m.tif", movie_data())
    np.save(tmp_path / "m.npy", movie_data())
    with pytest.raises(UserError, match="--channel applies to ScanImage TIFFs and to movies with a C \\(channel\\) axis"):
        open_movie(tmp_path / "m.tif", channel=1)
    with pytest.raises(UserError, match=r"--channel and --plane apply to ScanImage TIFFs and to movies with a C "
                                        r"\(channel\) or Z \(plane\) axis"):
        open_movie(tmp_path / "m.npy", channel=1, plane=2)
    with pytest.raises(UserError, match="--dataset applies to HDF5 files only"):
        open_movie(tmp_path / "m.tif", dataset="data")


def half(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("kind", ["contiguous", "bigtiff", "pages"])
def test_truncated_tiff(tmp_path, kind):
    data = movie_data(t=30)
    path = tmp_path / "m.tif"
    if kind == "pages":
        with tifffile.TiffWriter(path) as tw:
            for frame in data:
                tw.write(frame, compression="zlib")
    else:
        tifffile.imwrite(path, data, bigtiff=kind == "bigtiff")
    half(path)
    with pytest.raises(UserError, match="truncated") as err:
        open_movie(path)
    assert "\n" not in str(err.value)


def test_truncated_hdf5_and_npy(tmp_path):
    data = movie_data(t=30)
    with h5py.File(tmp_path / "m.h5", "w") as f:
        f["data"] = data
    half(tmp_path / "m.h5")
    with pytest.raises(UserError, match="not a readable HDF5 file"):
        open_movie(tmp_path / "m.h5")
    np.save(tmp_path / "m.npy", data)
    half(tmp_path / "m.npy")
    with pytest.raises(UserError, match="not a readable .npy"):
        open_movie(tmp_path / "m.npy")


def test_garbage_tiff(tmp_path):
    (tmp_path / "g.tif").write_bytes(b"not a tiff at all" * 10)
    with pytest.raises(UserError, match="not a readable TIFF"):
        open_movie(tmp_path / "g.tif")


def test_scanimage_files_go_to_the_scanimage_reader(tmp_path):
    from livedenoise.io.scanimage_tiff import write_scanimage_tiff

    data = movie_data()
    both = np.stack([data, data + 1000], axis=1)[:, None]  # (T, Z=1, C=2, H, W)
    write_scanimage_tiff(tmp_path / "si.tif", both.astype(np.int16), channels=[1, 2])
    tifffile.imwrite(tmp_path / "plain.tif", data)
    with open_movie(tmp_path / "si.tif", channel=2, plane=1) as m:
        assert m.shape == data.shape
        np.testing.assert_array_equal(m.read(0, len(m)), data + 1000)
    with open_movie(tmp_path / "plain.tif") as m:
        assert m.shape == data.shape
    with pytest.raises(UserError, match="--plane applies to ScanImage TIFFs and to movies with a Z"):
        open_movie(tmp_path / "plain.tif", plane=1)


def test_rgb_tiff_is_refused(tmp_path):
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((5, 16, 16, 3), np.uint8), photometric="rgb")
    with pytest.raises(UserError, match="RGB"):
        open_movie(tmp_path / "rgb.tif")


# ------------------------------------------------------------ issue 13: compressed TIFFs


@pytest.mark.parametrize("compression", ["lzw", "zstd", "zlib"])
@pytest.mark.parametrize("bigtiff", [False, True])
def test_compressed_tiffs_through_imagecodecs(tmp_path, compression, bigtiff):
    data = movie_data(dtype=np.uint16) + 500
    path = tmp_path / f"{compression}.tif"
    tifffile.imwrite(path, data, compression=compression, predictor=compression != "zstd", bigtiff=bigtiff,
                     photometric="minisblack")
    with open_movie(path) as m:
        assert not m.memmapped
        check_reads(m, data)


def test_lzw_tiff_written_by_libtiff(tmp_path):
    """Fiji / Bio-Formats style: LZW pages written by libtiff (Pillow), one page at a time."""
    from PIL import Image

    data = movie_data(dtype=np.uint16) + 500
    frames = [Image.fromarray(f) for f in data]
    frames[0].save(tmp_path / "lzw.tif", save_all=True, append_images=frames[1:], compression="tiff_lzw")
    with open_movie(tmp_path / "lzw.tif") as m:
        check_reads(m, data)


@pytest.mark.parametrize("compression", ["lzw", "zstd"])
def test_missing_codec_names_the_package_not_the_file(tmp_path, compression):
    """Without imagecodecs (blocked in a fresh interpreter), the error says what to install."""
    import subprocess
    import sys

    path = tmp_path / f"{compression}.tif"
    tifffile.imwrite(path, movie_data(dtype=np.uint16), compression=compression, photometric="minisblack")
    code = ("import sys; sys.modules['imagecodecs'] = None\n"
            "from livedenoise.io.readers import open_movie\n"
            "from livedenoise.errors import UserError\n"
            f"try:\n    open_movie({str(path)!r})\nexcept UserError as e:\n    print(e)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    msg = r.stdout.strip()
    assert "needs the Python package 'imagecodecs'" in msg and "pip install imagecodecs" in msg, msg
    assert compression.upper() in msg and "truncated" not in msg and "corrupt" not in msg, msg
