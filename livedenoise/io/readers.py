"""Movies on disk as (frames, height, width) arrays read in pieces.

`open_movie(path)` returns a `Movie`: `shape` (T, H, W), `dtype`, and
`read(start, stop)` giving frames start..stop-1 as a new (n, H, W) array in the
file's sample type (native byte order). Nothing reads the whole file: TIFF and
NumPy files are memory-mapped when their pixels are stored contiguously and
uncompressed, otherwise read page by page; HDF5 is read by hyperslab, so a
20 GB recording costs only the frames asked for (a `serve --record` file still
being written is opened in SWMR mode).

Formats: multi-page TIFF and BigTIFF (.tif/.tiff; compressed pages through
tifffile, LZW / zstd / LZMA ... through `imagecodecs`), ScanImage TIFF (channels and
planes de-interleaved by `livedenoise.io.readers_scanimage`, chosen with
`channel=` / `plane=`), HDF5 (.h5/.hdf5/.hdf, `dataset=`; by default the dataset named by the file's
`default_dataset` attribute, else the only dataset of 3 or more axes, else `data` or `mov`),
NumPy (.npy), and 4D NIfTI fMRI runs (.nii/.nii.gz: `livedenoise.io.nifti`, a movie whose
frames are (I, J, K) volumes, so `shape` is (T, I, J, K)).

Axes (letters T Z Y X C, `livedenoise.io.movie.plan_axes`): what the file says
first: HDF5 DIMENSION_LABELS (h5py `dset.dims[i].label`: t/time/frame, z/plane,
y/row, x/column, c/channel), a TIFF's hyperstack axes (ImageJ `TZCYX`); else
`axes=` (`--axes`, e.g. "YXT", "TZYXC": one letter per stored axis, first axis
first); else the format's convention: a TIFF's pages are its frames, a .npy holds
(T, Y, X), and an unlabelled 3-D HDF5 dataset is read as (T, Y, X) only when
that is the plain reading (whole-frame chunks, a livedenoise file, the first
axis the longest, or frames closer to square than the time-last reading
gives); otherwise it is refused with both readings and `--axes`, since
MATLAB / CaImAn write (H, W, T). A Z or C axis longer than 1 needs `plane=` /
`channel=` (1-based).

Every problem a user can fix (missing file, unknown extension, truncated or
unreadable file, a missing codec, a 2D image instead of a movie, a missing
dataset, an ambiguous layout) raises `UserError` with one line saying what to do.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np

from livedenoise.errors import UserError
from livedenoise.io.movie import (
    AxisPlan, Movie, axis_letter, first_line, missing_codec, parse_axes, plan_axes, quiet_tifffile,
)
from livedenoise.io.nifti import NIFTI_EXTS, is_nifti_path, open_nifti
from livedenoise.io.readers_scanimage import is_scanimage_tiff, open_scanimage_movie

TIFF_EXTS = (".tif", ".tiff")
HDF5_EXTS = (".h5", ".hdf5", ".hdf")
NPY_EXTS = (".npy",)
MOVIE_EXTS = TIFF_EXTS + HDF5_EXTS + NPY_EXTS
DEFAULT_DATASETS = ("data", "mov")


class ArrayMovie(Movie):
    """A movie backed by an array (np.memmap for files; any (T, H, W) array in tests, or (T, I, J, K) volumes)."""

    def __init__(self, array: np.ndarray, path: str | os.PathLike = "<array>", *, owner=None):
        if array.ndim not in (3, 4):
            raise ValueError(f"expected a (T, H, W) movie or a (T, I, J, K) run of volumes, got shape {array.shape}")
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


def _positional_axes(path: Path, shape: tuple[int, ...]) -> str:
    """The formats' convention without labels: (T, Y, X), singleton axes dropped ("-").

    A 3-D array is (T, Y, X) as it stands (a 1-frame movie is still a movie); otherwise the
    last two axes are the frame and the one other axis longer than 1 is time.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2:
        raise UserError(f"{path} holds data of shape {shape}, not a movie; livedenoise needs (frames, height, width)")
    if len(shape) == 3:
        return "TYX"
    lead = [i for i in range(len(shape) - 2) if shape[i] != 1]
    if not lead:
        raise _not_a_movie(path, shape[-2:])
    if len(lead) > 1:
        raise UserError(
            f"{path} holds a {len(shape)}-D array of shape {shape}; livedenoise reads one (frames, height, width) movie: "
            "say which axis is which with --axes (letters T Z Y X C, e.g. TZYX, TCYX, TZYXC) and pick one plane / "
            "channel with --plane / --channel"
        )
    return "".join("T" if i == lead[0] else "-" for i in range(len(shape) - 2)) + "YX"


class TiffPagesMovie(Movie):
    """A TIFF whose pixels are compressed or scattered: read page by page (one page per frame)."""

    def __init__(self, path: Path, tif, pages: list, shape: tuple[int, int, int], dtype: np.dtype,
                 *, transpose: bool = False):
        self.path = path
        self._tif = tif
        self._pages = pages
        self.shape = shape
        self.dtype = np.dtype(dtype).newbyteorder("=")
        self._transpose = transpose  # pages hold (X, Y): --axes ...XY

    def read(self, start: int, stop: int) -> np.ndarray:
        start, stop = self._check_range(start, stop)
        out = np.empty((stop - start, *self.shape[1:]), self.dtype)
        page_shape = self.shape[1:][::-1] if self._transpose else self.shape[1:]
        k = start
        try:
            with quiet_tifffile():
                for k in range(start, stop):
                    img = self._pages[k].asarray(maxworkers=1).reshape(page_shape)
                    out[k - start] = img.T if self._transpose else img
        except Exception as exc:  # tifffile raises ValueError / TiffFileError / OSError / codec errors
            codec = missing_codec(self.path, exc, getattr(self._pages[k], "compression", None))
            if codec is not None:
                raise codec from None
            raise UserError(f"{self.path}: cannot read frame {k} ({first_line(exc)}); the file may be truncated or corrupt") from None
        return out

    def close(self) -> None:
        if self._tif is not None:
            self._tif.close()
            self._tif = None


def _open_tiff(path: Path, axes: str | None, channel: int | None, plane: int | None) -> Movie:
    import tifffile

    size = path.stat().st_size
    try:
        with quiet_tifffile():
            tif = tifffile.TiffFile(path)
    except Exception as exc:
        raise UserError(f"{path} is not a readable TIFF (truncated or corrupt?): {first_line(exc)}") from None
    try:
        with quiet_tifffile():
            movie = _tiff_movie(path, tif, size, axes, channel, plane)
    except UserError:
        tif.close()
        raise
    except Exception as exc:
        tif.close()
        raise missing_codec(path, exc) or UserError(
            f"{path} is not a readable TIFF (truncated or corrupt?): {first_line(exc)}") from None
    if isinstance(movie, TiffPagesMovie) and len(movie):
        try:
            movie.read(0, 1)  # a missing codec or a broken first page fails here, not mid-run
        except UserError:
            movie.close()
            raise
    return movie


def _tiff_plan(path: Path, shape: tuple[int, ...], series_axes: str, given: str | None,
               channel: int | None, plane: int | None) -> AxisPlan:
    """Layout of a TIFF series: `--axes`, else its hyperstack axes (ImageJ TZCYX) when it has
    more than one non-frame axis, else pages are frames."""
    shape = tuple(int(s) for s in shape)
    if given is not None:
        return plan_axes(str(path), shape, given=given, channel=channel, plane=plane)
    lead = [i for i in range(len(shape) - 2) if shape[i] != 1]
    if len(lead) > 1 and len(series_axes) == len(shape):
        labels = [a if a in "TZCYX" else None for a in series_axes]
        if all(labels[i] for i in range(len(shape)) if shape[i] != 1):
            return plan_axes(str(path), shape, labels=labels, label_source=f"TIFF metadata (axes {series_axes})",
                             channel=channel, plane=plane)
    return plan_axes(str(path), shape, default=_positional_axes(path, shape), channel=channel, plane=plane)


def _tiff_movie(path: Path, tif, size: int, given: str | None, channel: int | None, plane: int | None) -> Movie:
    if not tif.series:
        raise UserError(f"{path} contains no images")
    series = tif.series[0]
    series_axes = getattr(series, "axes", "")
    if "S" in series_axes and series.shape[series_axes.index("S")] > 1:
        raise UserError(
            f"{path} holds colour (RGB) or multi-sample images of shape {tuple(series.shape)}; livedenoise needs "
            "single-channel frames (save grayscale pages, e.g. tifffile photometric='minisblack')"
        )
    shape = tuple(int(s) for s in series.shape)
    dtype = np.dtype(series.dtype)
    offset = getattr(series, "dataoffset", None)
    if offset is not None and len([s for s in shape if s != 1]) >= 3:
        # The common case (tifffile, ScanImage, ImageJ): one contiguous block. Map it
        # without walking every page header (a long recording has 100k of them).
        plan = _tiff_plan(path, shape, series_axes, given, channel, plane)
        return _memmap_tiff(path, tif, offset, plan, dtype, size)
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
        series_axes = ""
    else:
        series_pages = list(series.pages)
    plan = _tiff_plan(path, shape, series_axes, given, channel, plane)
    # Is the file long enough for what its headers promise?
    for p in series_pages:
        if p is None or not hasattr(p, "dataoffsets"):
            continue
        end = max((o + c for o, c in zip(p.dataoffsets, p.databytecounts)), default=0)
        if end > size:
            raise UserError(f"{path} is truncated: its headers point to byte {end} but the file has {size} bytes")
    if series_pages is pages:
        offset = _contiguous_offset(pages, dtype, shape)
    else:
        offset = getattr(series, "dataoffset", None)
    if offset is not None:
        return _memmap_tiff(path, tif, offset, plan, dtype, size)
    if dtype.kind not in "iuf":
        raise UserError(f"{path}: sample type {dtype} is not supported (need integers or floats)")
    frame_pages, transpose = _frame_pages(path, plan, series_pages)
    return TiffPagesMovie(path, tif, frame_pages, plan.movie_shape, dtype, transpose=transpose)


def _frame_pages(path: Path, plan: AxisPlan, pages: list) -> tuple[list, bool]:
    """The page of each frame when frames are whole pages: (pages in frame order, pages hold (X, Y))."""
    frame_axes = plan.axes[-2:]
    lead_shape = plan.shape[:-2]
    if frame_axes not in ("YX", "XY"):
        raise UserError(
            f"{path}: with {plan.describe()} every frame is spread over its {len(pages)} compressed pages, which "
            "cannot be read frame by frame; re-save it uncompressed (or one page per frame)"
        )
    if int(np.prod(lead_shape, dtype=np.int64)) != len(pages):
        raise UserError(
            f"{path}: cannot map its {len(pages)} compressed pages onto shape {plan.shape} ({plan.describe()}); "
            "re-save it as a plain multi-page TIFF"
        )
    t_axis = plan.axes.index("T")
    fixed = [0 if i == t_axis else int(plan.index[i]) for i in range(len(lead_shape))]
    out = []
    for t in range(plan.movie_shape[0]):
        fixed[t_axis] = t
        out.append(pages[int(np.ravel_multi_index(fixed, lead_shape))] if lead_shape else pages[0])
    return out, frame_axes == "XY"


def _memmap_tiff(path: Path, tif, offset: int, plan: AxisPlan, dtype: np.dtype, size: int) -> Movie:
    shape = plan.shape
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if offset + nbytes > size:
        t = plan.movie_shape[0]
        raise UserError(f"{path} is truncated: {t} frames need {offset + nbytes} bytes but the file has {size}")
    if dtype.kind not in "iuf":
        raise UserError(f"{path}: sample type {dtype} is not supported (need integers or floats)")
    file_dtype = dtype.newbyteorder(tif.byteorder)  # pixels keep the file's byte order on disk
    mm = np.memmap(path, dtype=file_dtype, mode="r", offset=offset, shape=shape)
    tif.close()
    return ArrayMovie(plan.arrange(mm[plan.key()]), path)


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
    """An HDF5 dataset read by hyperslab: only the frames asked for (`plan` maps its axes)."""

    def __init__(self, path: Path, h5file, dataset, plan: AxisPlan):
        self.path = path
        self._file = h5file
        self._ds = dataset
        self.dataset = dataset.name
        self.plan = plan
        self.shape = plan.movie_shape
        self.dtype = np.dtype(dataset.dtype).newbyteorder("=")

    def read(self, start: int, stop: int) -> np.ndarray:
        start, stop = self._check_range(start, stop)
        try:
            data = self._ds[self.plan.key(start, stop)]
        except (OSError, ValueError, KeyError) as exc:
            raise UserError(
                f"{self.path}: cannot read frames {start}:{stop} of {self.dataset} ({first_line(exc)}); "
                "the file may be truncated or corrupt"
            ) from None
        return np.ascontiguousarray(self.plan.arrange(np.asarray(data)), dtype=self.dtype)

    def close(self) -> None:
        if self._file is not None:
            with contextlib.suppress(Exception):
                self._file.close()
            self._file = None

    def describe(self) -> str:
        text = super().describe()
        return text if self.plan.source == "position" else f"{text} ({self.plan.describe()})"


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


def _open_h5(path: Path, dataset: str | None, axes: str | None, channel: int | None, plane: int | None) -> Movie:
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
            movies = [k for k, s in datasets.items() if len([d for d in s if d != 1]) >= 3]
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
        if np.dtype(ds.dtype).kind not in "iuf":
            raise UserError(f"{path}: dataset {name} has sample type {ds.dtype}; need integers or floats")
        plan = _h5_plan(path, f, name, ds, axes, channel, plane)
        movie = H5Movie(path, f, ds, plan)
        _read_record_counters(f, name, movie)
        if len(movie):
            movie.read(0, 1)  # touch the first frame: a truncated file fails here, not mid-run
            movie.read(len(movie) - 1, len(movie))
        return movie
    except BaseException:
        f.close()
        raise


def _h5_labels(path: Path, name: str, ds) -> list[str | None] | None:
    """Axis letters from the dataset's DIMENSION_LABELS (h5py `dims[i].label`), None when it has none."""
    try:
        raw = [ds.dims[i].label for i in range(ds.ndim)]
    except Exception:  # dimension scales unreadable: as if unlabelled
        return None
    raw = [r.decode(errors="replace") if isinstance(r, bytes) else str(r or "") for r in raw]
    if not any(r.strip() for r in raw):
        return None
    letters = [axis_letter(r) for r in raw]
    unknown = [r for r, a in zip(raw, letters) if r.strip() and a is None]
    if unknown:
        raise UserError(
            f"{path}: dataset {name} has DIMENSION_LABELS {tuple(raw)}; {unknown[0]!r} is not an axis livedenoise "
            "knows (t/time/frame, z/plane, y/row, x/column, c/channel): say the layout with --axes (e.g. TYX, TZYXC)"
        )
    unnamed = [i for i, (r, n) in enumerate(zip(raw, ds.shape)) if not r.strip() and n != 1]
    if unnamed:
        raise UserError(
            f"{path}: dataset {name} of shape {tuple(int(n) for n in ds.shape)} has DIMENSION_LABELS {tuple(raw)} "
            f"that leave axis {unnamed[0]} unnamed; say the layout with --axes (letters T Z Y X C, e.g. TYX, TZYXC)"
        )
    return letters


def _h5_plan(path: Path, f, name: str, ds, given: str | None, channel: int | None, plane: int | None) -> AxisPlan:
    label = f"{path} (dataset {name})"
    shape = tuple(int(s) for s in ds.shape)
    if given is not None:
        return plan_axes(label, shape, given=given, channel=channel, plane=plane)
    labels = _h5_labels(path, name, ds)
    if labels is not None:
        return plan_axes(label, shape, labels=labels, label_source="DIMENSION_LABELS", channel=channel, plane=plane)
    default = _positional_axes(path, shape)
    _check_time_first(path, f, name, ds, default)
    return plan_axes(label, shape, default=default, channel=channel, plane=plane)


def _check_time_first(path: Path, f, name: str, ds, axes: str) -> None:
    """Refuse an unlabelled 3-axis dataset whose time axis is not plainly the first one.

    MATLAB, CaImAn (d1, d2, T) and others store movies time-last, so (A, B, C) may be
    A frames of B x C (TYX) or C frames of A x B (YXT). TYX is taken when the file says
    so in its structure (chunks holding whole B x C frames, a `serve --record` file, a
    livedenoise file naming it `default_dataset`) or when it is the plain reading: A is
    the longest axis, or B x C frames are closer to square than A x B ones. Anything else,
    a cube (64, 64, 64) included, is refused with both readings and the --axes flag.
    """
    kept = [i for i, a in enumerate(axes) if a != "-"]
    a_len, b_len, c_len = (int(ds.shape[i]) for i in kept)
    chunks = tuple(int(ds.chunks[i]) for i in kept) if ds.chunks else None
    if chunks is not None and chunks[1:] == (b_len, c_len) and 2 * chunks[0] < a_len:
        return  # stored frame by frame along the first axis (livedenoise's own writer does this)
    time_last_chunks = chunks is not None and chunks[:2] == (a_len, b_len) and 2 * chunks[2] < c_len
    if not time_last_chunks:
        fn = f.get("frame")
        if name.lstrip("/") == "frames" and fn is not None and getattr(fn, "shape", None) == (a_len,):
            return  # a `serve --record` file: one frame number per frame of the first axis
        if _attr_str(f.attrs.get("default_dataset", "")).lstrip("/") == name.lstrip("/"):
            return  # a livedenoise file (e.g. a simulate truth file), written (T, H, W)

        def aspect(h: int, w: int) -> float:
            return max(h, w) / max(min(h, w), 1)

        if a_len > max(b_len, c_len) or aspect(b_len, c_len) < aspect(a_len, b_len):
            return
    raise UserError(
        f"{path}: dataset {name} of shape {tuple(int(s) for s in ds.shape)} has no DIMENSION_LABELS and its time "
        f"axis is not plainly the first: it reads as TYX ({a_len} frames of {b_len}x{c_len}) or as YXT "
        f"({c_len} frames of {a_len}x{b_len}); say which with --axes TYX or --axes YXT (or label the dataset's "
        "dimensions, h5py dset.dims[i].label)"
    )


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


def _open_npy(path: Path, axes: str | None, channel: int | None, plane: int | None) -> Movie:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:
        raise UserError(f"{path} is not a readable .npy file (truncated or corrupt?): {first_line(exc)}") from None
    if not isinstance(arr, np.ndarray):
        raise UserError(f"{path} does not hold a single array")
    if arr.dtype.kind not in "iuf":
        raise UserError(f"{path} holds {arr.dtype} data; need integers or floats")
    shape = tuple(arr.shape)
    if axes is not None:
        plan = plan_axes(str(path), shape, given=axes, channel=channel, plane=plane)
    else:  # no labels in a .npy: (T, Y, X), the layout np.save(movie) of a (frames, lines, pixels) array gives
        plan = plan_axes(str(path), shape, default=_positional_axes(path, shape), channel=channel, plane=plane)
    return ArrayMovie(plan.arrange(arr[plan.key()]), path)


# --------------------------------------------------------------------------- entry


def open_movie(
    path: str | os.PathLike,
    *,
    channel: int | None = None,
    plane: int | None = None,
    dataset: str | None = None,
    axes: str | None = None,
) -> Movie:
    """Open a movie file as a (T, H, W) `Movie`; see the module docstring for formats, axes and errors.

    channel, plane: 1-based; a ScanImage channel ID, or an index along a C / Z axis.
    dataset: HDF5 dataset path. axes: `--axes` letters (T Z Y X C), one per stored axis.
    Raises UserError (one line) for anything the user can fix.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"movie file {path} does not exist; check the path")
    if path.is_dir():
        raise UserError(f"{path} is a folder; give a movie file ({', '.join(MOVIE_EXTS + NIFTI_EXTS)})")
    if is_nifti_path(path):  # a 4D fMRI run: frames are volumes (T, I, J, K)
        given = [flag for flag, v in (("--channel", channel), ("--plane", plane), ("--dataset", dataset),
                                      ("--axes", axes)) if v is not None]
        if given:
            raise UserError(f"{', '.join(given)} do(es) not apply to {path.name}: a NIfTI run's axes come from its "
                            "header (x, y, z, time)")
        return open_nifti(path)
    ext = path.suffix.lower()
    if ext not in MOVIE_EXTS:
        raise UserError(f"{path}: unknown movie format {ext or '(no extension)'!r}; use one of {', '.join(MOVIE_EXTS + NIFTI_EXTS)}")
    if dataset is not None and ext not in HDF5_EXTS:
        raise UserError(f"--dataset applies to HDF5 files only; {path.name} is {ext}")
    axes = parse_axes(axes)
    if ext in TIFF_EXTS:
        try:
            is_si = bool(is_scanimage_tiff(path))
        except UserError:
            raise
        except Exception:
            is_si = False  # unreadable: let the generic reader say why
        if is_si:
            if axes is not None:
                raise UserError(
                    f"--axes does not apply to {path.name}: a ScanImage TIFF's layout comes from its own metadata; "
                    "pick a stream with --channel / --plane"
                )
            return open_scanimage_movie(path, channel, plane)
        return _open_tiff(path, axes, channel, plane)
    if ext in HDF5_EXTS:
        return _open_h5(path, dataset, axes, channel, plane)
    return _open_npy(path, axes, channel, plane)
