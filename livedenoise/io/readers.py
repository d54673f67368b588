"""Movies on disk as (frames, height, width) arrays read in pieces.

`open_movie(path)` returns a `Movie`: `shape` (T, H, W), `dtype`, and
`read(start, stop)` giving frames start..stop-1 as a new (n, H, W) array in the
file's sample type (native byte order). Nothing reads the whole file: TIFF and
NumPy files are memory-mapped when their pixels are stored contiguously and
uncompressed, otherwise read page by page; HDF5 is read by hyperslab, so a
20 GB recording costs only the frames asked for (a `serve --record` file still
being written is opened in SWMR mode).

Formats: multi-page TIFF and BigTIFF (.tif/.tiff), ScanImage TIFF (channels and
planes de-interleaved by `livedenoise.io.readers_scanimage`, chosen with
`channel=` / `plane=`), HDF5 (.h5/.hdf5/.hdf, `dataset=`; by default the dataset named by the file's
`default_dataset` attribute, else the only 3D dataset, else `data` or `mov`),
NumPy (.npy).
Every problem a user can fix (missing file, unknown extension, truncated or
unreadable file, a 2D image instead of a movie, a missing dataset) raises
`UserError` with one line saying what to do.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np

from livedenoise.errors import UserError
from livedenoise.io.movie import Movie, first_line, quiet_tifffile
from livedenoise.io.readers_scanimage import is_scanimage_tiff, open_scanimage_movie

TIFF_EXTS = (".tif", ".tiff")
HDF5_EXTS = (".h5", ".hdf5", ".hdf")
NPY_EXTS = (".npy",)
MOVIE_EXTS = TIFF_EXTS + HDF5_EXTS + NPY_EXTS
DEFAULT_DATASETS = ("data", "mov")


class ArrayMovie(Movie):
    """A movie backed by an array (np.memmap for files; any (T, H, W) array in tests)."""

    def __init__(self, array: np.ndarray, path: str | os.PathLike = "<array>", *, owner=None):
        if array.ndim != 3:
            raise ValueError(f"expected a (T, H, W) array, got shape {array.shape}")
        self._array = array
        self._owner = owner
        self.path = Path(path)
        self.shape = tuple(int(s) for s in array.shape)  # type: ignore[assignment]
        self.dtype = array.dtype.newbyteorder("=")
        self.memmapped = isinstance(array, np.memmap)

    def read(self, start: int, stop: int) -> np.ndarray:
        start, stop = self._check_range(start, stop)
        try:
            return np.array(self._array[start:stop], dtype=self.dtype)
        except OSError as exc:  # e.g. a file truncated after it was opened
            raise UserError(f"{self.path}: cannot read frames {start}:{stop} ({exc}); the file may be truncated") from None

    def close(self) -> None:
        mm = getattr(self._array, "_mmap", None)
        self._array = None  # type: ignore[assignment]
        if mm is not None:
            with contextlib.suppress(Exception):
                mm.close()
        if self._owner is not None:
            with contextlib.suppress(Exception):
                self._owner.close()
            self._owner = None


# --------------------------------------------------------------------------- TIFF


def _not_a_movie(path: Path, shape) -> UserError:
    return UserError(
        f"{path} holds a single {'x'.join(map(str, shape))} image, not a movie; "
        "livedenoise needs a (frames, height, width) stack"
    )


def _squeeze_to_movie(path: Path, shape: tuple[int, ...]) -> tuple[int, int, int]:
    """Drop singleton axes (keeping the last two); the rest must be (T, H, W)."""
    if len(shape) < 2:
        raise UserError(f"{path} holds data of shape {tuple(shape)}, not a movie; livedenoise needs (frames, height, width)")
    lead = [s for s in shape[:-2] if s != 1]
    if not lead:
        if len(shape) == 2 or int(np.prod(shape[:-2])) == 1:
            raise _not_a_movie(path, shape[-2:])
    if len(lead) > 1:
        raise UserError(
            f"{path} holds a {len(shape)}-D array of shape {tuple(shape)}; livedenoise needs (frames, height, width): "
            "split channels or planes into separate files first"
        )
    return (int(lead[0]), int(shape[-2]), int(shape[-1]))


class TiffPagesMovie(Movie):
    """A TIFF whose pixels are compressed or scattered: read page by page."""

    def __init__(self, path: Path, tif, pages: list, shape: tuple[int, int, int], dtype: np.dtype):
        self.path = path
        self._tif = tif
        self._pages = pages
        self.shape = shape
        self.dtype = np.dtype(dtype).newbyteorder("=")

    def read(self, start: int, stop: int) -> np.ndarray:
        start, stop = self._check_range(start, stop)
        out = np.empty((stop - start, *self.shape[1:]), self.dtype)
        try:
            with quiet_tifffile():
                for k in range(start, stop):
                    out[k - start] = self._pages[k].asarray(maxworkers=1).reshape(self.shape[1:])
        except Exception as exc:  # tifffile raises ValueError / TiffFileError / OSError / codec errors
            raise UserError(f"{self.path}: cannot read frame {k} ({first_line(exc)}); the file may be truncated or corrupt") from None
        return out

    def close(self) -> None:
        if self._tif is not None:
            self._tif.close()
            self._tif = None


def _open_tiff(path: Path) -> Movie:
    import tifffile

    size = path.stat().st_size
    try:
        with quiet_tifffile():
            tif = tifffile.TiffFile(path)
    except Exception as exc:
        raise UserError(f"{path} is not a readable TIFF (truncated or corrupt?): {first_line(exc)}") from None
    try:
        with quiet_tifffile():
            movie = _tiff_movie(path, tif, size)
    except UserError:
        tif.close()
        raise
    except Exception as exc:
        tif.close()
        raise UserError(f"{path} is not a readable TIFF (truncated or corrupt?): {first_line(exc)}") from None
    return movie


def _tiff_movie(path: Path, tif, size: int) -> Movie:
    if not tif.series:
        raise UserError(f"{path} contains no images")
    series = tif.series[0]
    axes = getattr(series, "axes", "")
    if "S" in axes and series.shape[axes.index("S")] > 1:
        raise UserError(
            f"{path} holds colour (RGB) or multi-sample images of shape {tuple(series.shape)}; livedenoise needs "
            "single-channel frames (save grayscale pages, e.g. tifffile photometric='minisblack')"
        )
    shape = tuple(series.shape)
    dtype = np.dtype(series.dtype)
    offset = getattr(series, "dataoffset", None)
    if offset is not None and len([s for s in shape if s != 1]) >= 3:
        # The common case (tifffile, ScanImage, ImageJ): one contiguous block. Map it
        # without walking every page header (a long recording has 100k of them).
        return _memmap_tiff(path, tif, offset, _squeeze_to_movie(path, shape), dtype, size)
    tif.pages.useframes = True  # light page objects: only offsets, sizes and a shared key frame
    pages = list(tif.pages)  # reads every IFD (headers only); fails on a broken IFD chain
    squeezed = [s for s in shape if s != 1]
    if len(squeezed) <= 2 and len(pages) > 1:
        # Pages written one at a time (several one-page series): a page stack
        # when every page has the same shape and sample type.
        first = pages[0]
        same = all(
            getattr(p, "shape", None) == first.shape and np.dtype(p.dtype) == np.dtype(first.dtype) for p in pages
        )
        if not same:
            raise UserError(f"{path}: its pages differ in size or sample type; livedenoise needs a stack of equal frames")
        page_shape = [s for s in first.shape if s != 1]
        if len(page_shape) != 2:
            raise UserError(f"{path}: pages of shape {first.shape} are not single-channel images (RGB is not supported)")
        series_pages, shape, dtype = pages, (len(pages), *page_shape), np.dtype(first.dtype)
    else:
        shape = _squeeze_to_movie(path, shape)
        series_pages = list(series.pages)
        if len(series_pages) not in (1, shape[0]):
            series_pages = []  # not one page per frame: only a contiguous memmap can serve it
    t, h, w = shape
    # Is the file long enough for what its headers promise?
    for p in series_pages:
        if p is None or not hasattr(p, "dataoffsets"):
            continue
        end = max((o + c for o, c in zip(p.dataoffsets, p.databytecounts)), default=0)
        if end > size:
            raise UserError(f"{path} is truncated: its headers point to byte {end} but the file has {size} bytes")
    offset = getattr(series, "dataoffset", None) if series_pages is not pages else None
    if series_pages is pages:
        offset = _contiguous_offset(pages, dtype, shape)
    if offset is not None:
        return _memmap_tiff(path, tif, offset, (t, h, w), dtype, size)
    if len(series_pages) != t:
        raise UserError(f"{path}: cannot map its {len(pages)} pages onto {t} frames; re-save it as a plain multi-page TIFF")
    if dtype.kind not in "iuf":
        raise UserError(f"{path}: sample type {dtype} is not supported (need integers or floats)")
    return TiffPagesMovie(path, tif, series_pages, (t, h, w), dtype)


def _memmap_tiff(path: Path, tif, offset: int, shape: tuple[int, int, int], dtype: np.dtype, size: int) -> Movie:
    t, h, w = shape
    nbytes = t * h * w * dtype.itemsize
    if offset + nbytes > size:
        raise UserError(f"{path} is truncated: {t} frames need {offset + nbytes} bytes but the file has {size}")
    if dtype.kind not in "iuf":
        raise UserError(f"{path}: sample type {dtype} is not supported (need integers or floats)")
    file_dtype = dtype.newbyteorder(tif.byteorder)  # pixels keep the file's byte order on disk
    mm = np.memmap(path, dtype=file_dtype, mode="r", offset=offset, shape=(t, h, w))
    tif.close()
    return ArrayMovie(mm, path)


def _contiguous_offset(pages: list, dtype: np.dtype, shape) -> int | None:
    """Byte offset when every page is one uncompressed strip right after the previous one."""
    frame_bytes = int(np.prod(shape[1:])) * dtype.itemsize
    start = None
    expect = None
    for p in pages:
        if getattr(p, "compression", 1) != 1 or not hasattr(p, "dataoffsets"):
            return None
        offs, counts = list(p.dataoffsets), list(p.databytecounts)
        if sum(counts) != frame_bytes or any(b != a + c for a, c, b in zip(offs, counts, offs[1:])):
            return None
        if start is None:
            start = offs[0]
        elif offs[0] != expect:
            return None
        expect = offs[0] + frame_bytes
    if getattr(pages[0], "fillorder", 1) != 1 or getattr(pages[0], "predictor", 1) != 1:
        return None
    return start


# --------------------------------------------------------------------------- HDF5


class H5Movie(Movie):
    def __init__(self, path: Path, h5file, dataset, shape: tuple[int, int, int], squeeze_axes: tuple[int, ...]):
        self.path = path
        self._file = h5file
        self._ds = dataset
        self.dataset = dataset.name
        self.shape = shape
        self.dtype = np.dtype(dataset.dtype).newbyteorder("=")
        self._squeeze = squeeze_axes

    def read(self, start: int, stop: int) -> np.ndarray:
        start, stop = self._check_range(start, stop)
        try:
            data = self._ds[self._time_key(start, stop)]
        except (OSError, ValueError, KeyError) as exc:
            raise UserError(
                f"{self.path}: cannot read frames {start}:{stop} of {self.dataset} ({first_line(exc)}); "
                "the file may be truncated or corrupt"
            ) from None
        return np.ascontiguousarray(data.reshape(stop - start, *self.shape[1:]), dtype=self.dtype)

    def _time_key(self, start: int, stop: int):
        key = []
        placed = False
        for i in range(self._ds.ndim):
            if i in self._squeeze:
                key.append(0)
            elif not placed:
                key.append(slice(start, stop))
                placed = True
            else:
                key.append(slice(None))
        return tuple(key)

    def close(self) -> None:
        if self._file is not None:
            with contextlib.suppress(Exception):
                self._file.close()
            self._file = None


def _h5_datasets(f) -> dict[str, tuple]:
    import h5py

    found: dict[str, tuple] = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            found[name] = tuple(obj.shape)

    f.visititems(visit)
    return found


def _attr_str(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _open_h5(path: Path, dataset: str | None) -> Movie:
    import h5py

    try:
        f = h5py.File(path, "r")
    except Exception as exc:
        try:  # a `serve --record` file still being written (SWMR) refuses plain readers
            f = h5py.File(path, "r", swmr=True)
        except Exception:
            raise UserError(f"{path} is not a readable HDF5 file (truncated or corrupt?): {first_line(exc)}") from None
    try:
        datasets = _h5_datasets(f)
        listing = ", ".join(f"{k} {'x'.join(map(str, s))}" for k, s in datasets.items()) or "none"
        if dataset is not None:
            name = dataset.lstrip("/")
            if name not in datasets:
                raise UserError(f"{path} has no dataset {dataset!r}; datasets in the file: {listing}")
        elif isinstance(f.attrs.get("default_dataset"), (str, bytes)) and _attr_str(f.attrs["default_dataset"]) in datasets:
            name = _attr_str(f.attrs["default_dataset"])  # e.g. a simulate truth file: its clean movie
        else:
            movies = [k for k, s in datasets.items() if len([d for d in s if d != 1]) == 3]
            if len(movies) == 1:
                name = movies[0]
            else:
                named = [k for k in DEFAULT_DATASETS if k in datasets]
                if named:
                    name = named[0]
                elif not movies:
                    raise UserError(f"{path} has no 3D (frames, height, width) dataset; datasets in the file: {listing}")
                else:
                    raise UserError(f"{path} has several 3D datasets; pick one with --dataset ({listing})")
        ds = f[name]
        shape = tuple(ds.shape)
        if len(shape) == 3:
            movie_shape, squeeze = shape, ()
        else:
            movie_shape = _squeeze_to_movie(path, shape)
            squeeze = tuple(i for i, s in enumerate(shape) if s == 1)
            if len(shape) - len(squeeze) != 3:
                raise UserError(f"{path}: dataset {name} of shape {shape} is not (frames, height, width)")
        if np.dtype(ds.dtype).kind not in "iuf":
            raise UserError(f"{path}: dataset {name} has sample type {ds.dtype}; need integers or floats")
        movie = H5Movie(path, f, ds, tuple(int(s) for s in movie_shape), squeeze)
        _read_record_counters(f, name, movie)
        if len(movie):
            movie.read(0, 1)  # touch the first frame: a truncated file fails here, not mid-run
            movie.read(len(movie) - 1, len(movie))
        return movie
    except BaseException:
        f.close()
        raise


def _read_record_counters(f, name: str, movie: Movie) -> None:
    """A `serve --record` file: its `frame` dataset numbers the frames of `frames` (and its
    `meta` attribute holds the acquisition's `start` metadata, with `frame_step`)."""
    import json

    fn = f.get("frame")
    if name != "frames" or fn is None or getattr(fn, "ndim", 0) != 1 or fn.shape[0] != len(movie):
        return
    if np.dtype(fn.dtype).kind not in "iu":
        return
    movie.frame_numbers = np.asarray(fn[:], np.int64)
    try:
        meta = json.loads(_attr_str(f.attrs.get("meta", "{}")))
        step = meta.get("start", {}).get("frame_step", meta.get("frame_step", 1))
    except (ValueError, AttributeError, TypeError):
        step = 1
    movie.frame_step = step if isinstance(step, int) and not isinstance(step, bool) and step >= 1 else 1


# --------------------------------------------------------------------------- NumPy


def _open_npy(path: Path) -> Movie:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:
        raise UserError(f"{path} is not a readable .npy file (truncated or corrupt?): {first_line(exc)}") from None
    if not isinstance(arr, np.ndarray):
        raise UserError(f"{path} does not hold a single array")
    if arr.dtype.kind not in "iuf":
        raise UserError(f"{path} holds {arr.dtype} data; need integers or floats")
    shape = tuple(arr.shape)
    if arr.ndim != 3:
        movie_shape = _squeeze_to_movie(path, shape)
        arr = arr.reshape(movie_shape)
    return ArrayMovie(arr, path)


# --------------------------------------------------------------------------- entry


def open_movie(
    path: str | os.PathLike,
    *,
    channel: int | None = None,
    plane: int | None = None,
    dataset: str | None = None,
) -> Movie:
    """Open a movie file; see the module docstring for formats and errors."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"movie file {path} does not exist; check the path")
    if path.is_dir():
        raise UserError(f"{path} is a folder; give a movie file ({', '.join(MOVIE_EXTS)})")
    ext = path.suffix.lower()
    if ext not in MOVIE_EXTS:
        raise UserError(f"{path}: unknown movie format {ext or '(no extension)'!r}; use one of {', '.join(MOVIE_EXTS)}")
    if dataset is not None and ext not in HDF5_EXTS:
        raise UserError(f"--dataset applies to HDF5 files only; {path.name} is {ext}")
    if ext in TIFF_EXTS:
        try:
            is_si = bool(is_scanimage_tiff(path))
        except UserError:
            raise
        except Exception:
            is_si = False  # unreadable: let the generic reader say why
        if is_si:
            return open_scanimage_movie(path, channel, plane)
        _refuse_channel_plane(path, channel, plane)
        return _open_tiff(path)
    _refuse_channel_plane(path, channel, plane)
    if ext in HDF5_EXTS:
        return _open_h5(path, dataset)
    return _open_npy(path)


def _refuse_channel_plane(path: Path, channel, plane) -> None:
    given = [n for n, v in (("--channel", channel), ("--plane", plane)) if v is not None]
    if given:
        raise UserError(
            f"{' and '.join(given)} {'apply' if len(given) > 1 else 'applies'} to ScanImage TIFFs only; {path.name} is not one "
            "(it holds a single channel and plane)"
        )
